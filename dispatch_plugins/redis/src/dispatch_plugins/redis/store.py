"""The async Redis store, on ``redis.asyncio``.

Every write is one Lua script (:mod:`~dispatch_plugins.redis.lua`), run atomically by the
server: a claim, a batch of outcomes, a rescue, a cron fire, a workflow park or wake-up never
interleaves with another client's write, and nothing is read in Python then written back.
:class:`RedisStore` holds the connection, the lifecycle and the keyspace version; each
operation is a function of :mod:`~dispatch_plugins.redis.ops`, by section of the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import redis
import redis.asyncio as aredis
from dispatch_core.errors import StoreUnavailableError
from dispatch_core.store import StopListening, Store
from dispatch_plugins.redis import ops
from dispatch_plugins.redis.client import (
    MIN_SERVER,
    aeval,
    is_unavailable,
    keep_cancellation,
    make_async_client,
    unavailable,
)
from dispatch_plugins.redis.listener import Listener
from dispatch_plugins.redis.ops.common import (
    BUCKET_STEPS,
    COUNT_BUDGET,
    COUNT_RUNNABLE_CHUNK,
    COUNT_RUNNABLE_LIMIT,
    DELETE_CHUNK,
    PAGE_EXAMINE,
    PAGE_ITEMS,
    PREVIEW_BUDGET,
    QUEUE_CHUNK,
    RESCUE_CHUNK,
    WALK_CHUNK,
)
from dispatch_plugins.redis.sync import RedisSyncStore
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

# The bounds of the operations' script calls (COUNT_RUNNABLE_CHUNK ... RESCUE_CHUNK) are
# defined in ops/common.py, where the operations read them; they are named here too.

#: Entries one step of the version-1 upgrade moves, at most.
MIGRATE_CHUNK = 200


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

    # -- the operations ------------------------------------------------------------------------
    #
    # Each is a function of ops/ taking the store first (as an ops.common.Runner), bound here
    # as a method, so that its signature and docstring are written once, beside its code.

    # producing, inspection and control: ops/jobs.py
    enqueue = ops.enqueue
    get_job = ops.get_job
    list_jobs = ops.list_jobs
    count_jobs = ops.count_jobs
    count_runnable = ops.count_runnable
    throughput = ops.throughput
    cancel = ops.cancel
    retry = ops.retry

    # the worker's hot path: ops/claim.py
    claim = ops.claim
    heartbeat = ops.heartbeat
    finish = ops.finish
    rescue_expired = ops.rescue_expired
    next_run_at = ops.next_run_at

    # the dead-letter queue: ops/dlq.py
    list_dlq = ops.list_dlq
    count_dlq = ops.count_dlq
    get_dlq = ops.get_dlq
    replay_dlq = ops.replay_dlq
    purge_dlq = ops.purge_dlq

    # workers, the leader, cron, queues and retention: ops/cluster.py
    register_worker = ops.register_worker
    deregister_worker = ops.deregister_worker
    list_workers = ops.list_workers
    acquire_leadership = ops.acquire_leadership
    release_leadership = ops.release_leadership
    get_leader = ops.get_leader
    upsert_cron = ops.upsert_cron
    list_cron = ops.list_cron
    get_cron = ops.get_cron
    set_cron_enabled = ops.set_cron_enabled
    fire_cron = ops.fire_cron
    delete_cron = ops.delete_cron
    set_queue = ops.set_queue
    pause_queue = ops.pause_queue
    list_queues = ops.list_queues
    prune = ops.prune

    # durable workflows: ops/workflows.py
    create_run = ops.create_run
    get_run = ops.get_run
    list_runs = ops.list_runs
    list_steps = ops.list_steps
    save_step = ops.save_step
    update_run = ops.update_run
    set_run_version = ops.set_run_version
    send_event = ops.send_event
    take_event = ops.take_event
