"""The async Redis store, on ``redis.asyncio``.

Every write is one Lua script (:mod:`~dispatch_plugins.redis.scripts`), run atomically by the
server: a claim, a batch of outcomes, a rescue, a cron fire, a workflow park or wake-up never
interleaves with another client's write, and nothing is read in Python then written back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import redis
import redis.asyncio as aredis
from dispatch_core._ids import new_id, new_token
from dispatch_core.cluster import WorkerInfo
from dispatch_core.cron import CronEntry
from dispatch_core.errors import (
    CronNotFoundError,
    DLQEntryNotFoundError,
    InvalidTransitionError,
    JobIdTakenError,
    JobNotFoundError,
    RunNotFoundError,
    StoreUnavailableError,
)
from dispatch_core.models import (
    DLQEntry,
    DLQFilter,
    Job,
    JobFilter,
    NewJob,
    Outcome,
    OutcomeKind,
    RunnableCount,
    SortOrder,
    ThroughputBucket,
    utcnow,
)
from dispatch_core.queues import QueueConfig, QueueStats
from dispatch_core.states import JobState, check_transition
from dispatch_core.store import PruneCutoffs, StopListening, Store
from dispatch_core.workflows.models import (
    NewEvent,
    NewRun,
    RunFilter,
    RunState,
    StepRecord,
    WorkflowEvent,
    WorkflowRun,
)
from dispatch_plugins.redis import codec as c
from dispatch_plugins.redis.client import (
    MIN_SERVER,
    aeval,
    is_unavailable,
    keep_cancellation,
    make_async_client,
    unavailable,
)
from dispatch_plugins.redis.listener import Listener
from dispatch_plugins.redis.sync import RedisSyncStore, enqueue_result
from dispatch_plugins.redis.url import RedisURL, parse_url

__all__ = ["RedisStore", "SCHEMA_VERSION", "COUNT_RUNNABLE_CHUNK", "COUNT_RUNNABLE_LIMIT"]

log = logging.getLogger("dispatch_plugins.redis")

#: The keyspace layout version, kept in ``<prefix>:schema``.
SCHEMA_VERSION = 1

#: Scripts that only read: safe to run again after a dropped connection.
_READS = frozenset(
    {
        "page",
        "count_jobs",
        "count_runnable",
        "count_runnable_plan",
        "throughput",
        "next_run_at",
        "count_dlq",
        "list_workers",
        "list_cron",
        "list_queues",
        "migrate",
    }
)
#: Entries one step of :meth:`RedisStore.count_runnable` looks at, at most (about a
#: millisecond of the server's time: other clients' commands wait no longer for it).
COUNT_RUNNABLE_CHUNK = 200
#: Entries :meth:`RedisStore.count_runnable` looks at in one queue (or one tenant's index), at
#: most: about half a second of the server's time.
COUNT_RUNNABLE_LIMIT = 100_000
#: Dead-letter ids handed to one rescue script; it asks for more when it needs them.
_RESCUE_DLQ_IDS = 32
_OUTCOME_KINDS = {
    OutcomeKind.COMPLETED: "completed",
    OutcomeKind.RETRY: "retry",
    OutcomeKind.FAIL: "fail",
    OutcomeKind.RELEASE: "release",
}


class RedisStore(Store):
    """A durable store in a Redis server (7.0 or later), shared by any number of processes.

    URL: ``redis://[:password@]host[:port][/db][?prefix=dispatch]``, ``rediss://`` for TLS,
    ``unix:///path/to/redis.sock[?db=0]`` (see :mod:`~dispatch_plugins.redis.url`). Every key
    starts with ``<prefix>:``.

    Call :meth:`open` before anything else (and :meth:`migrate` once, which only stamps the
    keyspace version); other methods raise :class:`~dispatch_core.errors.StoreUnavailableError`
    on a store that is not open, or while the server cannot be reached. :meth:`sync` is the
    exception: the blocking producer has its own client.
    """

    scheme: ClassVar[str] = "redis"

    def __init__(self, url: str) -> None:
        self.url = url
        self.config: RedisURL = parse_url(url)
        self.prefix = self.config.prefix
        self._client: aredis.Redis | None = None
        self._client_pid = 0
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._opened = False
        self._listeners: set[Listener] = set()
        self._sync: RedisSyncStore | None = None
        self._sync_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RedisStore({self.config.display!r}, prefix={self.prefix!r})"

    # -- plumbing ------------------------------------------------------------------------------

    def _client_is_ours(self) -> bool:
        return (
            self._client is not None
            and self._client_pid == os.getpid()
            and self._client_loop is asyncio.get_running_loop()
        )

    async def _get_client(self) -> aredis.Redis:
        client = self._client
        if client is not None and self._client_is_ours():
            return client
        if not self._opened:
            raise StoreUnavailableError(
                f"{self!r} is not open: 'await store.open()' before using it"
            )
        await self.open()  # a forked child, or another event loop: a client of its own
        assert self._client is not None
        return self._client

    async def _call(self, name: str, *args: Any) -> Any:
        """Run a script; a read whose connection dropped is run once more on a fresh one."""
        client = await self._get_client()
        argv = [self.prefix, *args]
        for attempt in (1, 2):
            try:
                return await keep_cancellation(aeval(client, name, argv))
            except redis.RedisError as exc:
                if not is_unavailable(exc):
                    raise
                if attempt == 1 and name in _READS and isinstance(exc, redis.ConnectionError):
                    continue
                raise unavailable(self.config, exc) from exc
        raise AssertionError("unreachable")

    async def _cmd(self, fn: Callable[[aredis.Redis], Any]) -> Any:
        """Run one plain read command (``HGETALL``...), once more after a dropped connection."""
        client = await self._get_client()
        for attempt in (1, 2):
            try:
                return await keep_cancellation(fn(client))
            except redis.RedisError as exc:
                if not is_unavailable(exc):
                    raise
                if attempt == 1 and isinstance(exc, redis.ConnectionError):
                    continue
                raise unavailable(self.config, exc) from exc
        raise AssertionError("unreachable")

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and check the server. Idempotent; in a forked child or another event loop,
        makes a client of its own.

        Raises:
            StoreUnavailableError: the server cannot be reached or used (too old: Redis 7.0
                or later is needed); the message names the server, never the password.
        """
        if self._client_is_ours():
            return
        client = make_async_client(self.config)
        try:
            info = await client.info("server")
            try:
                mem = await client.info("memory")
            except redis.ResponseError:  # INFO may be restricted on managed servers
                mem = {}
        except (redis.RedisError, OSError) as exc:
            with contextlib.suppress(Exception):
                await client.aclose()
            raise unavailable(self.config, exc) from exc
        version = str(info.get("redis_version", "0"))
        parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
        if parts < MIN_SERVER:
            await client.aclose()
            raise StoreUnavailableError(
                f"Redis at {self.config.display} is version {version}; dispatch-redis needs "
                "7.0 or later"
            )
        policy = mem.get("maxmemory_policy")
        if policy not in (None, "noeviction") and not self._opened:
            log.warning(
                "Redis at %s has maxmemory-policy %s: under memory pressure it may evict "
                "jobs; set maxmemory-policy noeviction",
                self.config.display,
                policy,
            )
        # A client inherited through fork() or made in another event loop is dropped, not
        # closed: its sockets belong to the parent or to the other loop.
        self._client, self._client_pid = client, os.getpid()
        self._client_loop = asyncio.get_running_loop()
        self._opened = True

    async def close(self) -> None:
        """Stop the listeners and close the clients. Idempotent."""
        for listener in list(self._listeners):
            with contextlib.suppress(RuntimeError):
                await listener.stop()
        self._listeners.clear()
        if self._sync is not None:
            await asyncio.to_thread(self._sync.close)
        ours = self._client is not None and self._client_is_ours()
        client, self._client, self._opened = self._client, None, False
        if client is not None and ours:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def migrate(self) -> list[str]:
        """Stamp the keyspace version (keys are made as they are needed); return
        ``["0001_keyspace"]`` the first time, ``[]`` after.

        Raises:
            StoreUnavailableError: the keyspace was written by a newer dispatch-redis.
        """
        found = int(await self._call("migrate", str(SCHEMA_VERSION)))
        if found > SCHEMA_VERSION:
            raise StoreUnavailableError(
                f"the keys under {self.prefix!r} on Redis at {self.config.display} are at "
                f"version {found}, newer than this dispatch-redis ({SCHEMA_VERSION}); upgrade it"
            )
        return [] if found else ["0001_keyspace"]

    async def listen(self, wake: Callable[[], None]) -> StopListening:
        """Call ``wake()`` whenever a write made jobs runnable, in any process: the scripts
        ``PUBLISH`` on ``<prefix>:wake`` and a dedicated connection subscribes to it,
        reconnecting on its own after a connection loss."""
        listener = Listener(self.config, wake)
        await listener.start()
        self._listeners.add(listener)

        async def stop() -> None:
            self._listeners.discard(listener)
            await listener.stop()

        return stop

    def sync(self) -> RedisSyncStore:
        """The blocking producer API (a ``redis.Redis`` client), safe from any thread."""
        with self._sync_lock:
            if self._sync is None:
                self._sync = RedisSyncStore(self.config)
            return self._sync

    # -- producing -----------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Write ``jobs`` in one script; see :meth:`Store.enqueue`."""
        if not jobs:
            return []
        res = await self._call("enqueue", c.us(utcnow()), str(len(jobs)), *c.job_args(jobs))
        return enqueue_result(jobs, res)

    # -- the worker's hot path -----------------------------------------------------------------

    async def claim(
        self,
        *,
        worker_id: str,
        queues: Collection[str] | None,
        names: Collection[str] | None,
        limit: int,
        lease_seconds: float,
        now: datetime,
    ) -> list[Job]:
        """Claim up to ``limit`` jobs in one script: promote due delayed jobs, then take the
        ready ones in claim order across the queues served, past paused queues and within
        the queues' caps and token buckets."""
        if limit <= 0:
            return []
        args: list[str] = [
            worker_id,
            c.us(now),
            c.us(now + timedelta(seconds=lease_seconds)),
            str(limit),
            new_token() + ".",
        ]
        if queues is None:
            args.append("-1")
        else:
            args += (str(len(queues)), *queues)
        if names is None:
            args.append("-1")
        else:
            args += (str(len(names)), *names)
        res = await self._call("claim", *args)
        return [c.job_from(flat) for flat in res]

    async def heartbeat(
        self,
        *,
        worker_id: str,
        leases: Mapping[str, str],
        lease_seconds: float,
        now: datetime,
        worker: WorkerInfo | None = None,
    ) -> set[str]:
        """Extend the leases and upsert the worker's row in one script; return the lost ids."""
        wargs = c.worker_args(worker, last_seen=now) if worker is not None else []
        args: list[str] = [
            c.us(now),
            c.us(now + timedelta(seconds=lease_seconds)),
            str(len(wargs)),
            *wargs,
            str(len(leases)),
        ]
        for job_id, token in leases.items():
            args += (job_id, token)
        return set(await self._call("heartbeat", *args))

    async def finish(self, outcomes: Sequence[Outcome], *, now: datetime) -> list[bool]:
        """Write a batch of outcomes in one script, each fenced by its attempt token; a
        terminal failure writes its dead-letter entry in the same script."""
        if not outcomes:
            return []
        args: list[str] = [c.us(now), str(len(outcomes))]
        for o in outcomes:
            args += (
                o.job_id,
                o.attempt_token,
                _OUTCOME_KINDS[o.kind],
                c.opt(o.error),
                c.opt_json(o.result),
                "" if o.run_at is None else "=" + c.us(o.run_at),
                new_id("dlq") if o.kind is OutcomeKind.FAIL else "",
            )
        res = await self._call("finish", *args)
        return [bool(x) for x in res]

    async def rescue_expired(
        self, *, now: datetime, worker_timeout: float | None = None
    ) -> list[Job]:
        """Rescue expired leases (and the jobs of dead and stopped workers) in one script per
        batch of dead-letter ids."""
        silent = "" if worker_timeout is None else c.us(now - timedelta(seconds=worker_timeout))
        out: list[Job] = []
        while True:
            ids = [new_id("dlq") for _ in range(_RESCUE_DLQ_IDS)]
            more, rescued = await self._call("rescue", c.us(now), silent, str(len(ids)), *ids)
            out += (c.job_from(flat) for flat in rescued)
            if not more:
                return out

    async def next_run_at(
        self, *, queues: Collection[str] | None, names: Collection[str] | None
    ) -> datetime | None:
        """The earliest due time of the served queues' runnable jobs (paused queues left out;
        ``names`` is not looked at: a due job of another name makes the worker back off)."""
        args = ["-1"] if queues is None else [str(len(queues)), *queues]
        res = await self._call("next_run_at", *args)
        return None if res is None else c.from_us(res)

    # -- inspection and control ----------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job:
        key = self._key("job", job_id)
        flat = await self._cmd(lambda cl: cl.hgetall(key))
        if not flat:
            raise JobNotFoundError(job_id)
        return c.job_from(flat)

    async def _page(
        self,
        *,
        base: str,
        keys: list[str],
        exclude: list[str],
        order: SortOrder,
        after: str | None,
        offset: int,
        limit: int,
        hash_prefix: str,
    ) -> list[Any]:
        args = [base, str(len(keys)), *keys, str(len(exclude)), *exclude]
        args += ("1" if order is SortOrder.DESC else "0", c.opt(after), str(offset), str(limit))
        args.append(hash_prefix)
        res: list[Any] = await self._call("page", *args)
        return res

    async def list_jobs(self, filter: JobFilter) -> list[Job]:
        """Walk the smallest index that matches (state, queue, name or tenant) by id, from the
        cursor, checking the other filters by index membership."""
        keys = []
        if filter.state is not None:
            keys.append(f"jobs:s:{filter.state.value}")
        if filter.queue is not None:
            keys.append(f"jobs:q:{filter.queue}")
        if filter.name is not None:
            keys.append(f"jobs:n:{filter.name}")
        if filter.tenant is not None:
            keys.append(f"jobs:t:{filter.tenant}")
        res = await self._page(
            base="jobs",
            keys=keys,
            exclude=[],
            order=filter.order,
            after=filter.after,
            offset=filter.offset,
            limit=filter.limit,
            hash_prefix="job:",
        )
        return [c.job_from(flat) for flat in res]

    async def count_jobs(
        self, *, queue: str | None = None, tenant: str | None = None
    ) -> dict[JobState, int]:
        keys = []
        if queue is not None:
            keys.append(f"jobs:q:{queue}")
        if tenant is not None:
            keys.append(f"jobs:t:{tenant}")
        flat = await self._call("count_jobs", str(len(keys)), *keys)
        return {JobState(k): int(v) for k, v in c.as_dict(flat).items() if int(v)}

    async def count_runnable(
        self,
        *,
        now: datetime,
        tenant: str | None = None,
        exclude_names: Collection[str] = (),
    ) -> list[RunnableCount]:
        """Runnable jobs by queue and name, counted in short steps that never hold up a claim,
        and at most :data:`COUNT_RUNNABLE_LIMIT` jobs a queue.

        It walks the claim's own indexes of each queue that has runnable jobs: its ready jobs
        (``ready:<queue>``) in claim order, then its delayed ones (``delayed:<queue>``) that
        are due by ``now``, reading only each job's name (and tenant, when asked for one).
        With ``tenant``, when that tenant's index (``jobs:t:<tenant>``, finished jobs
        included) is smaller than the due jobs, it walks that instead, reading each job's
        state, queue, name and ``run_at``.

        Bounds: each step is one read-only script over at most :data:`COUNT_RUNNABLE_CHUNK`
        entries (about a millisecond of the server's time), so other clients' commands run
        between two steps; and each queue (or the tenant's index) is looked at for at most
        :data:`COUNT_RUNNABLE_LIMIT` entries, about half a second of the server's time. Past
        that bound a queue's counts cover only the jobs it would hand out next, and are
        lower than the truth: a name all of whose jobs wait behind more than that many others
        of the same queue is not listed (unhandled jobs are never claimed, so they are
        usually at the head of their priority). The steps are not one snapshot: a job that
        is claimed, retried or made due while the count runs may be counted twice or not at
        all. See docs/redis.md.
        """
        excluded = sorted(set(exclude_names))
        own, due, queues = await self._call("count_runnable_plan", c.us(now), c.opt(tenant))
        groups: list[list[tuple[str, str, str]]]
        if tenant is not None and int(own) < int(due):
            groups = [[("index", f"jobs:t:{tenant}", "")]]
        else:
            groups = [[("ready", f"ready:{q}", q), ("delayed", f"delayed:{q}", q)] for q in queues]
        tail = [c.us(now), c.opt(tenant), str(len(excluded)), *excluded]
        counts: dict[tuple[str, str], int] = {}
        for walks in groups:
            left = COUNT_RUNNABLE_LIMIT
            for kind, key, queue in walks:
                cursor = ""
                while left > 0:
                    chunk = min(COUNT_RUNNABLE_CHUNK, left)
                    cursor, seen, flat = await self._call(
                        "count_runnable", kind, key, queue, cursor, str(chunk), *tail
                    )
                    left -= int(seen)
                    for i in range(0, len(flat), 3):
                        pair = (flat[i], flat[i + 1])
                        counts[pair] = counts.get(pair, 0) + int(flat[i + 2])
                    if not cursor:
                        break
        return [
            RunnableCount(queue=queue, name=name, count=n)
            for (queue, name), n in sorted(counts.items())
        ]

    async def throughput(
        self,
        *,
        since: datetime,
        bucket_seconds: int,
        queue: str | None = None,
        tenant: str | None = None,
    ) -> list[ThroughputBucket]:
        completed, failed = await self._call("throughput", c.us(since), c.opt(queue), c.opt(tenant))
        counts: dict[int, list[int]] = {}
        width = bucket_seconds * 1_000_000
        for i, times in enumerate((completed, failed)):
            for raw in times:
                slot = int(float(raw)) // width
                counts.setdefault(slot, [0, 0])[i] += 1
        return [
            ThroughputBucket(
                start=datetime.fromtimestamp(slot * bucket_seconds, UTC),
                completed=pair[0],
                failed=pair[1],
            )
            for slot, pair in sorted(counts.items())
        ]

    async def cancel(self, job_id: str, *, now: datetime) -> Job:
        res = await self._call("cancel", c.us(now), job_id)
        return _transition(job_id, res, JobState.CANCELLED)

    async def retry(self, job_id: str, *, now: datetime) -> Job:
        res = await self._call("retry", c.us(now), job_id)
        return _transition(job_id, res, JobState.PENDING)

    # -- the dead-letter queue -------------------------------------------------------------------

    async def list_dlq(self, filter: DLQFilter) -> list[DLQEntry]:
        keys = []
        if filter.queue is not None:
            keys.append(f"dlq:q:{filter.queue}")
        if filter.tenant is not None:
            keys.append(f"dlq:t:{filter.tenant}")
        if filter.name is not None:
            keys.append(f"dlq:n:{filter.name}")
        exclude = []
        if filter.replayed is True:
            keys.append("dlq:rp")
        elif filter.replayed is False:
            exclude.append("dlq:rp")
        res = await self._page(
            base="dlq",
            keys=keys,
            exclude=exclude,
            order=filter.order,
            after=filter.after,
            offset=filter.offset,
            limit=filter.limit,
            hash_prefix="dlq:",
        )
        return [c.dlq_from(flat) for flat in res]

    async def count_dlq(
        self,
        *,
        queue: str | None = None,
        tenant: str | None = None,
        replayed: bool | None = None,
        before: datetime | None = None,
    ) -> int:
        keys = []
        if queue is not None:
            keys.append(f"dlq:q:{queue}")
        if tenant is not None:
            keys.append(f"dlq:t:{tenant}")
        rp = "" if replayed is None else ("1" if replayed else "0")
        return int(
            await self._call(
                "count_dlq",
                str(len(keys)),
                *keys,
                rp,
                "" if before is None else c.us(before),
            )
        )

    async def get_dlq(self, entry_id: str) -> DLQEntry:
        key = self._key("dlq", entry_id)
        flat = await self._cmd(lambda cl: cl.hgetall(key))
        if not flat or "job_id" not in flat:
            raise DLQEntryNotFoundError(entry_id)
        return c.dlq_from([x for kv in flat.items() for x in kv])

    async def replay_dlq(self, entry_id: str, *, new_job_id: str, now: datetime) -> Job:
        res = await self._call("replay_dlq", c.us(now), entry_id, new_job_id)
        status = int(res[0])
        if status == -2:
            raise DLQEntryNotFoundError(entry_id)
        if status == -1:
            raise JobIdTakenError(res[1])
        return c.job_from(res[1])

    async def purge_dlq(
        self,
        *,
        before: datetime,
        queue: str | None = None,
        tenant: str | None = None,
        limit: int | None = None,
    ) -> int:
        keys = []
        if queue is not None:
            keys.append(f"dlq:q:{queue}")
        if tenant is not None:
            keys.append(f"dlq:t:{tenant}")
        return int(
            await self._call(
                "purge_dlq",
                c.us(before),
                str(len(keys)),
                *keys,
                "" if limit is None else str(limit),
            )
        )

    # -- the cluster: workers and the leader ------------------------------------------------------

    async def register_worker(self, worker: WorkerInfo) -> None:
        await self._call("register_worker", *c.worker_args(worker))

    async def deregister_worker(self, worker_id: str, *, now: datetime) -> None:
        await self._call("deregister_worker", worker_id, c.us(now))

    async def list_workers(self) -> list[WorkerInfo]:
        leader, rows = await self._call("list_workers")
        return [c.worker_from(flat, leader) for flat in rows]

    async def acquire_leadership(self, *, worker_id: str, ttl: float, now: datetime) -> bool:
        """Take or renew the lease in one script: a compare-and-set on the holder and expiry
        (times are the callers', like every other lease of the store)."""
        until = c.us(now + timedelta(seconds=ttl))
        return bool(await self._call("acquire_leadership", worker_id, c.us(now), until))

    async def release_leadership(self, worker_id: str) -> None:
        await self._call("release_leadership", worker_id)

    async def get_leader(self, *, now: datetime) -> str | None:
        key = self._key("leader")
        h = await self._cmd(lambda cl: cl.hgetall(key))
        if not h or int(h["expires_at"]) <= int(c.us(now)):
            return None
        holder: str = h["holder"]
        return holder

    # -- cron --------------------------------------------------------------------------------------

    async def upsert_cron(self, entries: Sequence[CronEntry], *, now: datetime) -> None:
        if not entries:
            return
        args: list[str] = [c.us(now), str(len(entries))]
        for e in entries:
            args += c.cron_args(e)
        await self._call("upsert_cron", *args)

    async def list_cron(self) -> list[CronEntry]:
        return [c.cron_from(flat) for flat in await self._call("list_cron")]

    async def get_cron(self, name: str) -> CronEntry:
        key = self._key("cron", name)
        h = await self._cmd(lambda cl: cl.hgetall(key))
        if not h:
            raise CronNotFoundError(name)
        return c.cron_from([x for kv in h.items() for x in kv])

    async def set_cron_enabled(
        self, name: str, *, enabled: bool, next_run_at: datetime, now: datetime
    ) -> CronEntry:
        res = await self._call(
            "set_cron_enabled", name, "1" if enabled else "0", c.us(next_run_at), c.us(now)
        )
        if int(res[0]) == -2:
            raise CronNotFoundError(name)
        return c.cron_from(res[1])

    async def fire_cron(
        self,
        *,
        name: str,
        tick: datetime,
        next_run_at: datetime,
        job: NewJob | None,
        now: datetime,
    ) -> Job | None:
        jobs = [job] if job is not None else []
        res = await self._call(
            "fire_cron",
            c.us(now),
            name,
            c.us(tick),
            c.us(next_run_at),
            str(len(jobs)),
            *c.job_args(jobs),
        )
        status = int(res[0])
        if status == -1:
            raise JobIdTakenError(res[1])
        if status == 0 or job is None:
            return None
        return c.job_from_new(job) if res[1] == 0 else c.job_from(res[1])

    async def delete_cron(self, name: str) -> bool:
        return bool(await self._call("delete_cron", name))

    # -- queues ------------------------------------------------------------------------------------

    async def set_queue(self, config: QueueConfig) -> None:
        await self._call(
            "set_queue",
            config.name,
            c.opt(None if config.concurrency is None else str(config.concurrency)),
            c.opt(None if config.rate is None else repr(float(config.rate))),
            c.opt(None if config.burst is None else str(config.burst)),
            str(config.bucket_size),
            "1" if config.per_tenant else "0",
        )

    async def pause_queue(self, name: str, *, paused: bool) -> None:
        await self._call("pause_queue", name, "1" if paused else "0")

    async def list_queues(self, *, now: datetime) -> list[QueueStats]:
        rows = await self._call("list_queues", c.us(now - timedelta(minutes=1)), c.us(now))
        out = []
        for name, cfg, depth, running, done in rows:
            h = c.as_dict(cfg)
            out.append(
                QueueStats(
                    name=name,
                    config=c.queue_config_from(name, cfg),
                    paused=h.get("paused") == "1",
                    depth=int(depth),
                    running=int(running),
                    completed_last_minute=int(done),
                )
            )
        return sorted(out, key=lambda q: q.name)

    # -- retention ---------------------------------------------------------------------------------

    async def prune(self, cutoffs: PruneCutoffs, *, limit: int = 10_000) -> int:
        def cut(d: datetime | None) -> str:
            return "" if d is None else c.us(d)

        return int(
            await self._call(
                "prune",
                str(limit),
                cut(cutoffs.completed),
                cut(cutoffs.failed),
                cut(cutoffs.cancelled),
                cut(cutoffs.dlq),
                cut(cutoffs.workers),
            )
        )

    # -- durable workflows -------------------------------------------------------------------------

    async def create_run(self, run: NewRun, driver: NewJob) -> WorkflowRun:
        pairs = c.run_pairs(run)
        res = await self._call(
            "create_run", c.us(utcnow()), run.id, str(len(pairs)), *pairs, *c.job_args([driver])
        )
        status = int(res[0])
        if status == -1:
            raise JobIdTakenError(res[1])
        if status == 0:
            return c.run_from(res[1])
        return c.run_from(pairs)

    async def get_run(self, run_id: str) -> WorkflowRun:
        key = self._key("run", run_id)
        h = await self._cmd(lambda cl: cl.hgetall(key))
        if not h:
            raise RunNotFoundError(run_id)
        return c.run_from([x for kv in h.items() for x in kv])

    async def list_runs(self, filter: RunFilter) -> list[WorkflowRun]:
        keys = []
        if filter.state is not None:
            keys.append(f"runs:s:{filter.state.value}")
        if filter.name is not None:
            keys.append(f"runs:n:{filter.name}")
        if filter.tenant is not None:
            keys.append(f"runs:t:{filter.tenant}")
        if filter.parent_run_id is not None:
            keys.append(f"runs:p:{filter.parent_run_id}")
        if filter.correlation_key is not None:
            keys.append(f"runs:c:{filter.correlation_key}")
        res = await self._page(
            base="runs",
            keys=keys,
            exclude=[],
            order=filter.order,
            after=filter.after,
            offset=filter.offset,
            limit=filter.limit,
            hash_prefix="run:",
        )
        return [c.run_from(flat) for flat in res]

    async def list_steps(self, run_id: str) -> list[StepRecord]:
        key = self._key("steps", run_id)
        h = await self._cmd(lambda cl: cl.hgetall(key))
        steps = [c.step_from(raw) for raw in h.values()]
        return sorted(steps, key=lambda s: s.seq)

    async def save_step(self, run_id: str, step: StepRecord, *, now: datetime) -> StepRecord:
        res = await self._call(
            "save_step", run_id, str(step.seq), step.state.value, c.step_json(step)
        )
        status = int(res[0])
        if status == -2:
            raise RunNotFoundError(run_id)
        return step if status == 1 else c.step_from(res[1])

    async def update_run(
        self,
        run_id: str,
        *,
        state: RunState,
        now: datetime,
        expect: frozenset[RunState] | None = None,
        generation: int | None = None,
        output: object = None,
        error: str | None = None,
        wake_at: datetime | None = None,
        waiting_for: str | None = None,
        driver: NewJob | None = None,
    ) -> WorkflowRun | None:
        """Check the run's state and generation, refuse a park whose event is already there,
        write the run and enqueue its driver: one script."""
        drivers = [driver] if driver is not None else []
        res = await self._call(
            "update_run",
            c.us(now),
            run_id,
            state.value,
            "" if expect is None else ",".join(sorted(s.value for s in expect)) or ",",
            "" if generation is None else str(generation),
            c.opt_json(output),
            c.opt(error),
            "" if wake_at is None else "=" + c.us(wake_at),
            c.opt(waiting_for),
            str(len(drivers)),
            *c.job_args(drivers),
        )
        status = int(res[0])
        if status == -2:
            raise RunNotFoundError(run_id)
        if status == -1:
            raise JobIdTakenError(res[1])
        return None if status == 0 else c.run_from(res[1])

    async def set_run_version(
        self, run_id: str, version: int, *, generation: int, now: datetime
    ) -> WorkflowRun | None:
        res = await self._call("set_run_version", run_id, str(version), str(generation), c.us(now))
        status = int(res[0])
        if status == -2:
            raise RunNotFoundError(run_id)
        return None if status == 0 else c.run_from(res[1])

    async def send_event(self, event: NewEvent, *, driver: NewJob, now: datetime) -> bool:
        """Store the event and, if the run waits for it, wake the run and make its timer due
        (or enqueue ``driver``): one script."""
        res = await self._call(
            "send_event",
            c.us(now),
            event.run_id,
            event.id,
            event.name,
            c.us(event.created_at),
            c.opt(event.tenant),
            c.event_json(event),
            *c.job_args([driver]),
        )
        status = int(res[0])
        if status == -2:
            raise RunNotFoundError(event.run_id)
        if status == -1:
            raise JobIdTakenError(res[1])
        return status == 1

    async def take_event(
        self, run_id: str, name: str, *, seq: int, now: datetime
    ) -> WorkflowEvent | None:
        raw = await self._call("take_event", run_id, name, str(seq))
        return None if raw is None else c.event_from(raw, seq)


def _transition(job_id: str, res: list[Any], target: JobState) -> Job:
    status = int(res[0])
    if status == -2:
        raise JobNotFoundError(job_id)
    if status == 0:
        current = JobState(res[1])
        if current is JobState.RUNNING and target is JobState.PENDING:
            raise InvalidTransitionError(job_id, "running", "pending", "the job is running")
        check_transition(job_id, current, target)
        raise InvalidTransitionError(job_id, current.value, target.value)  # pragma: no cover
    return c.job_from(res[1])
