"""The async Redis store, on ``redis.asyncio``.

Every write is one Lua script (:mod:`~dispatch_plugins.redis.scripts`), run atomically by the
server: a claim, a batch of outcomes, a rescue, a cron fire, a workflow park or wake-up never
interleaves with another client's write, and nothing is read in Python then written back.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import re
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import attrs

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
    Truncated,
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

__all__ = [
    "RedisStore",
    "SCHEMA_VERSION",
    "COUNT_RUNNABLE_CHUNK",
    "COUNT_RUNNABLE_LIMIT",
    "WALK_CHUNK",
    "COUNT_BUDGET",
    "DELETE_CHUNK",
    "PAGE_EXAMINE",
    "PAGE_ITEMS",
    "PREVIEW_BUDGET",
    "BUCKET_STEPS",
    "QUEUE_CHUNK",
    "RESCUE_CHUNK",
    "MIGRATE_CHUNK",
]

log = logging.getLogger("dispatch_plugins.redis")

#: The keyspace layout version, kept in ``<prefix>:schema``. Version 2 moved the dead-letter
#: indexes out of the entries' namespace and added the per-queue and per-tenant finished
#: indexes.
SCHEMA_VERSION = 2

#: Scripts safe to run again after a dropped connection: they only read, or do again what
#: they did (drop a stale name, add an index entry).
_READS = frozenset(
    {
        "page",
        "count_jobs",
        "count_runnable",
        "count_runnable_plan",
        "cards",
        "zcounts",
        "walk",
        "buckets",
        "zhashes",
        "queue_stats",
        "next_run_at",
        "migrate",
        "migrate_done",
    }
)
# Every script call does a bounded amount of work, so that it holds up other clients'
# commands (a claim, a PING) for about a millisecond at most; calls that have more to do go on
# from a cursor in the next call. The bounds below were measured on the 2-core test machine
# (docs/redis.md, Limits).

#: Entries one step of :meth:`RedisStore.count_runnable` looks at, at most (about a
#: millisecond of the server's time: other clients' commands wait no longer for it).
COUNT_RUNNABLE_CHUNK = 200
#: Entries :meth:`RedisStore.count_runnable` looks at in one queue (or one tenant's index), at
#: most: about half a second of the server's time.
COUNT_RUNNABLE_LIMIT = 100_000
#: Entries one step of a walk (a count or a throughput that cannot use an index directly, a
#: list of workers or cron entries, the silent-worker check) looks at, at most.
WALK_CHUNK = 250
#: Index entries a count may look up in one script (``ZINTERCARD`` looks at the smallest set's
#: entries once per other set); a count that would cost more walks in steps.
COUNT_BUDGET = 5_000
#: Rows one retention or purge step deletes (or looks at), at most.
DELETE_CHUNK = 100
#: Ids one listing step looks at, at most.
PAGE_EXAMINE = 500
#: Items one listing step returns, at most.
PAGE_ITEMS = 50
#: Bytes of long bodies one listing step with previews reads to cut them, at most (beyond the
#: item that crosses it): the server copies each long body once to take its first bytes.
PREVIEW_BUDGET = 4 * 1024 * 1024
#: Buckets one throughput step counts, at most.
BUCKET_STEPS = 100
#: Queues one ``list_queues`` step reads, at most.
QUEUE_CHUNK = 100
#: Running jobs one rescue step looks at, at most.
RESCUE_CHUNK = 100
#: Entries one step of the version-1 upgrade moves, at most.
MIGRATE_CHUNK = 200
#: Dead-letter ids handed to one rescue script; it asks for more when it needs them.
_RESCUE_DLQ_IDS = 32
#: A dead-letter entry id (a TypeID ``dlq_...``): the store mints them, so any other string
#: names no entry.
_DLQ_ID = re.compile(r"dlq_[0-7][0-9a-hjkmnp-tv-z]{25}")
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

    async def _scan(self, command: str, *key: str, count: int, **options: Any) -> list[Any]:
        """Every item (every value, for ``hscan``) a SCAN-family command (``scan``, ``sscan``,
        ``hscan``) returns, one bounded call at a time. Items may come twice."""
        items: list[Any] = []
        cursor = 0
        while True:

            def step(cl: aredis.Redis, at: int = cursor) -> Any:
                return getattr(cl, command)(*key, at, count=count, **options)

            cursor, batch = await self._cmd(step)
            items += batch.values() if isinstance(batch, dict) else batch
            if not cursor:
                return items

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
        """Bring the keyspace to :data:`SCHEMA_VERSION` and return the migrations applied:
        ``["0001_keyspace", "0002_disjoint_indexes"]`` on a fresh keyspace (only stamped: keys
        are made as they are needed), ``["0002_disjoint_indexes"]`` on a version-1 keyspace
        (moved in bounded steps, see :meth:`_upgrade_from_1`), ``[]`` after.

        Raises:
            StoreUnavailableError: the keyspace was written by a newer dispatch-redis.
        """
        found = int(await self._call("migrate", str(SCHEMA_VERSION)))
        if found > SCHEMA_VERSION:
            raise StoreUnavailableError(
                f"the keys under {self.prefix!r} on Redis at {self.config.display} are at "
                f"version {found}, newer than this dispatch-redis ({SCHEMA_VERSION}); upgrade it"
            )
        if found == 0:
            return ["0001_keyspace", "0002_disjoint_indexes"]
        if found == SCHEMA_VERSION:
            return []
        await self._upgrade_from_1()
        await self._call("stamp", str(SCHEMA_VERSION))
        return ["0002_disjoint_indexes"]

    async def _upgrade_from_1(self) -> None:
        """Version 1 to 2, in bounded steps (each idempotent, so an interrupted upgrade is
        simply run again): the dead-letter indexes leave the entries' namespace (``dlq:q:``,
        ``dlq:t:``... become ``dlqs:q:``, ``dlqs:t:``...), and finished jobs are added to
        their queue's and tenant's finished indexes. Processes of the older version must be
        stopped first: they keep writing the version-1 layout."""
        log.info("upgrading the keys under %r to version %d", self.prefix, SCHEMA_VERSION)
        gone = 0
        while True:
            moved, missing = await self._call("migrate_dlq", str(MIGRATE_CHUNK))
            gone += int(missing)
            if not int(moved):
                break
        leftovers = ["dlq:rp", "dlq:failed"]
        if gone:
            # index entries of entries that were gone: find the version-1 indexes they are in
            pattern = f"{self.prefix}:dlq:[qtn]:*"
            keys = await self._scan("scan", match=pattern, count=1000, _type="zset")
            leftovers += (k[len(self.prefix) + 1 :] for k in keys)
        for i in range(0, len(leftovers), MIGRATE_CHUNK):
            await self._call("drop_zsets", *leftovers[i : i + MIGRATE_CHUNK])
        for state in ("completed", "failed", "cancelled"):
            cursor_s = ""
            while True:
                cursor_s = await self._call("migrate_done", state, cursor_s, str(MIGRATE_CHUNK))
                if not cursor_s:
                    break

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
        """Rescue expired leases (and, with ``worker_timeout``, the jobs of dead and stopped
        workers) in bounded steps: the worker rows are checked :data:`WALK_CHUNK` at a time,
        then the running jobs :data:`RESCUE_CHUNK` at a time."""
        revoke = False
        if worker_timeout is not None:
            cut = c.us(now - timedelta(seconds=worker_timeout))
            cursor = ""
            while True:
                cursor, gone = await self._call("mark_silent", cut, cursor, str(WALK_CHUNK))
                revoke = revoke or bool(int(gone))
                if not cursor:
                    break
        out: list[Job] = []
        cursor = ""
        while True:
            ids = [new_id("dlq") for _ in range(_RESCUE_DLQ_IDS)]
            more, cursor, rescued = await self._call(
                "rescue",
                c.us(now),
                "1" if revoke else "0",
                cursor,
                str(RESCUE_CHUNK),
                str(len(ids)),
                *ids,
            )
            out += (c.job_from(flat) for flat in rescued)
            if not int(more):
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
        # job:<id> holds job hashes only (every index lives elsewhere), so no id reaches
        # another kind of key
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
        preview: int | None = None,
        bodies: Sequence[str] = (),
    ) -> list[Any]:
        """A listing page in bounded steps: each looks at :data:`PAGE_EXAMINE` ids at most and
        returns :data:`PAGE_ITEMS` hashes at most; the next one goes on from its cursor.

        With ``preview``, the script leaves each of the ``bodies`` fields longer than that out
        of its hash (:func:`_previewed` decodes what it sends instead), and a step stops
        early once it has read :data:`PREVIEW_BUDGET` bytes of them."""
        head = [base, str(len(keys)), *keys, str(len(exclude)), *exclude]
        head.append("1" if order is SortOrder.DESC else "0")
        out: list[Any] = []
        skipped = 0
        cursor = c.opt(after)
        while len(out) < limit:
            want = min(limit - len(out), PAGE_ITEMS)
            items, skips, cursor = await self._call(
                "page",
                *head,
                cursor,
                str(offset - skipped),
                str(want),
                hash_prefix,
                str(PAGE_EXAMINE),
                "" if preview is None else str(preview),
                str(PREVIEW_BUDGET),
                str(len(bodies)),
                *bodies,
            )
            out += items
            skipped += int(skips)
            if not cursor:
                break
        return out

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
            preview=filter.preview,
            bodies=("payload", "result"),
        )
        return [_previewed(flat, c.job_from) for flat in res]

    async def count_jobs(
        self, *, queue: str | None = None, tenant: str | None = None
    ) -> dict[JobState, int]:
        """Counts by state. Unfiltered: the sizes of the state indexes. For a queue or a
        tenant: finished jobs from its finished indexes; pending, running and retrying by
        intersecting their index with its own as far as that costs at most
        :data:`COUNT_BUDGET` (the costliest of the three is what the others leave of the
        total); what costs more is walked in bounded steps."""
        total, rows = await self._call("count_jobs", c.opt(queue), c.opt(tenant), str(COUNT_BUDGET))
        counts: dict[JobState, int] = {}
        derived: JobState | None = None
        for state, n, *keys in rows:
            if int(n) == -2:
                derived = JobState(state)
            elif int(n) == -1:
                counts[JobState(state)] = (await self._walk(keys[0], ins=keys[1:]))[0]
            else:
                counts[JobState(state)] = int(n)
        if derived is not None:
            # from one snapshot unless a state was walked; then jobs that moved meanwhile may
            # make it a little off: never below zero
            counts[derived] = max(0, int(total) - sum(counts.values()))
        return {state: n for state, n in counts.items() if n}

    async def _walk(
        self,
        driver: str,
        *,
        lo: str = "-inf",
        hi: str = "+inf",
        ins: Sequence[str] = (),
        outs: Sequence[str] = (),
        score_key: str = "",
        below: str = "",
        width: int | None = None,
        purge: bool = False,
        limit: int | None = None,
        chunk: int | None = None,
        collect: list[tuple[int, str]] | None = None,
    ) -> tuple[int, dict[int, int]]:
        """Walk the sorted set ``driver`` in score order (scores in ``[lo, hi)``), in steps of
        ``chunk`` (:data:`WALK_CHUNK`) entries, counting the members in every ``ins`` set, in
        no ``outs`` set and with a score below ``below`` in ``score_key``; by bucket of
        ``width`` too. With ``purge``, the matches (dead-letter entries) are deleted, at most
        ``limit``; with ``collect``, the ``limit`` matches of lowest score (in ``score_key``,
        else in ``driver``) are kept there, as (score, member). Returns the count and the
        counts by bucket."""
        total = 0
        slots: dict[int, int] = {}
        cursor = ""
        left = None if collect is not None else limit
        mode = "1" if purge else "0" if collect is None else "ids"
        while left is None or left > 0:
            cursor, n, flat = await self._call(
                "purge_walk" if purge else "walk",
                driver,
                cursor,
                str(chunk or WALK_CHUNK),
                lo,
                hi,
                str(len(ins)),
                *ins,
                str(len(outs)),
                *outs,
                score_key,
                below,
                "" if width is None else str(width),
                mode,
                "" if left is None else str(left),
            )
            total += int(n)
            if left is not None:
                left -= int(n)
            if collect is not None:
                found = [(int(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]
                collect[:] = heapq.nsmallest(limit or len(found), [*collect, *found])
            else:
                for i in range(0, len(flat), 2):
                    slot = int(flat[i])
                    slots[slot] = slots.get(slot, 0) + int(flat[i + 1])
            if not cursor:
                break
        return total, slots

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
        """Counted from the finished indexes by ``finished_at`` (all jobs', a queue's or a
        tenant's): per bucket that holds any, one range lookup and one count, at most
        :data:`BUCKET_STEPS` buckets a step. With both a queue and a tenant, the smaller of
        the two windows is walked in bounded steps, checking the other by membership."""
        width = bucket_seconds * 1_000_000
        frm = c.us(since)
        counts: dict[int, list[int]] = {}
        for i, (state, tag) in enumerate((("completed", "c"), ("failed", "f"))):
            if queue is not None and tenant is not None:
                by_tenant, by_queue = f"tdone{tag}:{tenant}", f"done{tag}:{queue}"
                n_tenant, n_queue = await self._call(
                    "zcounts", "2", by_tenant, frm, "+inf", by_queue, frm, "+inf"
                )
                if int(n_tenant) <= int(n_queue):
                    walk = (by_tenant, f"jobs:q:{queue}")
                else:
                    walk = (by_queue, f"jobs:t:{tenant}")
                _, slots = await self._walk(walk[0], lo=frm, ins=[walk[1]], width=width)
            else:
                if queue is not None:
                    key = f"done{tag}:{queue}"
                elif tenant is not None:
                    key = f"tdone{tag}:{tenant}"
                else:
                    key = f"done:{state}"
                slots = await self._buckets(key, frm, width)
            for slot, n in slots.items():
                counts.setdefault(slot, [0, 0])[i] += n
        return [
            ThroughputBucket(
                start=datetime.fromtimestamp(slot * bucket_seconds, UTC),
                completed=pair[0],
                failed=pair[1],
            )
            for slot, pair in sorted(counts.items())
            if pair[0] or pair[1]
        ]

    async def _buckets(self, key: str, frm: str, width: int) -> dict[int, int]:
        slots: dict[int, int] = {}
        while frm:
            frm, flat = await self._call("buckets", key, frm, str(width), str(BUCKET_STEPS))
            for i in range(0, len(flat), 2):
                slots[int(flat[i])] = int(flat[i + 1])
        return slots

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
            keys.append(f"dlqs:q:{filter.queue}")
        if filter.tenant is not None:
            keys.append(f"dlqs:t:{filter.tenant}")
        if filter.name is not None:
            keys.append(f"dlqs:n:{filter.name}")
        exclude = []
        if filter.replayed is True:
            keys.append("dlqs:rp")
        elif filter.replayed is False:
            exclude.append("dlqs:rp")
        res = await self._page(
            base="dlqs",
            keys=keys,
            exclude=exclude,
            order=filter.order,
            after=filter.after,
            offset=filter.offset,
            limit=filter.limit,
            hash_prefix="dlq:",
            preview=filter.preview,
            bodies=("payload",),
        )
        return [_previewed(flat, c.dlq_from) for flat in res]

    async def count_dlq(
        self,
        *,
        queue: str | None = None,
        tenant: str | None = None,
        replayed: bool | None = None,
        before: datetime | None = None,
    ) -> int:
        """Index sizes, intersections as far as they cost at most :data:`COUNT_BUDGET`, and
        walks in bounded steps past that (and for ``before`` with filters: the smaller of the
        window of ``dlqs:failed`` and the smallest filter index)."""
        filters = _dlq_filters(queue, tenant)
        if before is None:
            base = filters or ["dlqs"]
            if replayed is None:
                groups = [base]
            elif replayed:
                groups = [[*base, "dlqs:rp"]]
            else:
                groups = [base, [*base, "dlqs:rp"]]
            args: list[str] = [str(COUNT_BUDGET), str(len(groups))]
            for g in groups:
                args += (str(len(g)), *g)
            values = []
            for n, *keys in await self._call("cards", *args):
                if int(n) < 0:
                    n = (await self._walk(keys[0], ins=keys[1:]))[0]
                values.append(int(n))
            return values[0] if len(values) == 1 else max(0, values[0] - values[1])
        cut = c.us(before)
        ins = [*filters, "dlqs:rp"] if replayed else filters
        outs = ["dlqs:rp"] if replayed is False else []
        if not ins and not outs:
            (n,) = await self._call("zcounts", "1", "dlqs:failed", "-inf", f"({cut}")
            return int(n)
        return await self._dlq_walk(cut, ins, outs, purge=False)

    async def _dlq_walk(
        self, cut: str, ins: list[str], outs: list[str], *, purge: bool, limit: int | None = None
    ) -> int:
        """Count (or purge, at most ``limit``, oldest first) the entries that failed before
        ``cut``, in every ``ins`` index and in no ``outs`` one, walking the smaller of the
        window and the smallest ``ins`` index."""
        args = ["dlqs:failed", "-inf", f"({cut}"]
        for k in ins:
            args += (k, "-inf", "+inf")
        window, *sizes = (int(n) for n in await self._call("zcounts", str(len(ins) + 1), *args))
        chunk = DELETE_CHUNK if purge else None
        if not sizes or min(sizes) >= window:
            n, _ = await self._walk(
                "dlqs:failed", hi=cut, ins=ins, outs=outs, purge=purge, limit=limit, chunk=chunk
            )
            return n
        i = sizes.index(min(sizes))
        driver, rest = ins[i], ins[:i] + ins[i + 1 :]
        if not purge or limit is None:
            n, _ = await self._walk(
                driver,
                ins=rest,
                outs=outs,
                score_key="dlqs:failed",
                below=cut,
                purge=purge,
                chunk=chunk,
            )
            return n
        # the oldest `limit` of them: found in steps, then deleted in steps
        oldest: list[tuple[int, str]] = []
        await self._walk(
            driver,
            ins=rest,
            outs=outs,
            score_key="dlqs:failed",
            below=cut,
            limit=limit,
            collect=oldest,
        )
        deleted = 0
        ids = [member for _, member in sorted(oldest)]
        for j in range(0, len(ids), DELETE_CHUNK):
            deleted += int(await self._call("delete_dlqs", cut, *ids[j : j + DELETE_CHUNK]))
        return deleted

    async def get_dlq(self, entry_id: str) -> DLQEntry:
        # entry ids are minted by this store: anything else is no entry, and never a key
        if not _DLQ_ID.fullmatch(entry_id):
            raise DLQEntryNotFoundError(entry_id)
        key = self._key("dlq", entry_id)
        flat = await self._cmd(lambda cl: cl.hgetall(key))
        if not flat or "job_id" not in flat:
            raise DLQEntryNotFoundError(entry_id)
        return c.dlq_from([x for kv in flat.items() for x in kv])

    async def replay_dlq(self, entry_id: str, *, new_job_id: str, now: datetime) -> Job:
        if not _DLQ_ID.fullmatch(entry_id):
            raise DLQEntryNotFoundError(entry_id)
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
        """Delete in bounded steps of :data:`DELETE_CHUNK` entries, oldest first. With filters,
        walking the smaller of the window and the smallest filter index (from which, with a
        ``limit``, the oldest matches are gathered first, then deleted)."""
        cut = c.us(before)
        filters = _dlq_filters(queue, tenant)
        if limit is not None and limit <= 0:
            return 0
        if not filters:
            total = 0
            while limit is None or total < limit:
                n = DELETE_CHUNK if limit is None else min(DELETE_CHUNK, limit - total)
                deleted, seen = await self._call("prune_dlq", cut, str(n))
                total += int(deleted)
                if int(seen) < n:
                    break
            return total
        return await self._dlq_walk(cut, filters, [], purge=True, limit=limit)

    # -- the cluster: workers and the leader ------------------------------------------------------

    async def register_worker(self, worker: WorkerInfo) -> None:
        await self._call("register_worker", *c.worker_args(worker))

    async def deregister_worker(self, worker_id: str, *, now: datetime) -> None:
        await self._call("deregister_worker", worker_id, c.us(now))

    async def list_workers(self) -> list[WorkerInfo]:
        leader = await self._cmd(lambda cl: cl.hget(self._key("leader"), "holder"))
        return [
            c.worker_from(flat, leader or "") for flat in await self._zhashes("workers", "worker:")
        ]

    async def _zhashes(self, key: str, hash_prefix: str) -> list[Any]:
        """The hashes of a sorted set's members, in its order, :data:`WALK_CHUNK` a step."""
        out: list[Any] = []
        cursor = ""
        while True:
            cursor, rows = await self._call("zhashes", key, hash_prefix, cursor, str(WALK_CHUNK))
            out += rows
            if not cursor:
                return out

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
        return [c.cron_from(flat) for flat in await self._zhashes("crons", "cron:")]

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
        """The queues with a row or a job, read with ``SSCAN`` and :data:`QUEUE_CHUNK` queues
        a step."""
        names: set[str] = set()
        for key in ("queues", "qnames"):
            names.update(await self._scan("sscan", self._key(key), count=QUEUE_CHUNK))
        since, until = c.us(now - timedelta(minutes=1)), c.us(now)
        ordered = sorted(names)
        out = []
        for i in range(0, len(ordered), QUEUE_CHUNK):
            rows = await self._call("queue_stats", since, until, *ordered[i : i + QUEUE_CHUNK])
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
        return out

    # -- retention ---------------------------------------------------------------------------------

    async def prune(self, cutoffs: PruneCutoffs, *, limit: int = 10_000) -> int:
        """Delete in bounded steps of :data:`DELETE_CHUNK` rows, oldest first, at most
        ``limit`` of each kind (each finished state, dead letters, workers)."""
        total = 0
        for state, cut in (
            ("completed", cutoffs.completed),
            ("failed", cutoffs.failed),
            ("cancelled", cutoffs.cancelled),
        ):
            if cut is not None:
                total += await self._prune_steps("prune_jobs", state, c.us(cut), limit=limit)
        if cutoffs.dlq is not None:
            total += await self._prune_steps("prune_dlq", c.us(cutoffs.dlq), limit=limit)
        if cutoffs.workers is not None:
            cut_w, cursor, left = c.us(cutoffs.workers), "", limit
            while left > 0:
                n = min(DELETE_CHUNK, left)
                deleted, cursor = await self._call("prune_workers", cut_w, cursor, str(n))
                total += int(deleted)
                left -= int(deleted)
                if not cursor:
                    break
        return total

    async def _prune_steps(self, script: str, *args: str, limit: int) -> int:
        done, left = 0, limit
        while left > 0:
            n = min(DELETE_CHUNK, left)
            deleted, seen = await self._call(script, *args, str(n))
            done += int(deleted)
            left -= int(deleted)
            if int(seen) < n:
                break
        return done

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
            preview=filter.preview,
            bodies=("input", "output"),
        )
        return [_previewed(flat, c.run_from) for flat in res]

    async def list_steps(self, run_id: str) -> list[StepRecord]:
        raws = await self._scan("hscan", self._key("steps", run_id), count=WALK_CHUNK)
        steps = {s.seq: s for s in (c.step_from(raw) for raw in raws)}
        return sorted(steps.values(), key=lambda s: s.seq)

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


_Listed = TypeVar("_Listed", Job, DLQEntry, WorkflowRun)


def _previewed(flat: Sequence[Any], decode: Callable[[Sequence[Any]], _Listed]) -> _Listed:
    """Decode a hash of a listing with previews: a field ``~<name>`` valued
    ``<length>:<first bytes>`` stands for the body ``name`` the page script left out, and
    becomes a :class:`Truncated`."""
    names = flat[::2]
    if not any(name.startswith("~") for name in names):
        return decode(flat)
    plain: list[Any] = []
    cut: dict[str, Any] = {}
    for name, value in zip(names, flat[1::2], strict=True):
        if name.startswith("~"):
            size, _, head = value.partition(":")
            cut[name[1:]] = Truncated(preview=head, size=int(size))
            plain += (name[1:], "null")  # decodes to None; the Truncated takes its place
        else:
            plain += (name, value)
    return attrs.evolve(decode(plain), **cut)


def _dlq_filters(queue: str | None, tenant: str | None) -> list[str]:
    keys = []
    if queue is not None:
        keys.append(f"dlqs:q:{queue}")
    if tenant is not None:
        keys.append(f"dlqs:t:{tenant}")
    return keys


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
