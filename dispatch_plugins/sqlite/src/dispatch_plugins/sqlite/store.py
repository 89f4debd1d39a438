"""The async SQLite store, on aiosqlite."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, Concatenate, ParamSpec, TypeVar, cast

import aiosqlite

from dispatch_core.cluster import WorkerInfo
from dispatch_core.cron import CronEntry
from dispatch_core.errors import StoreUnavailableError
from dispatch_core.models import (
    DLQEntry,
    DLQFilter,
    Job,
    JobFilter,
    NewJob,
    Outcome,
    RunnableCount,
    ThroughputBucket,
)
from dispatch_core.queues import QueueConfig, QueueStats
from dispatch_core.states import JobState
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
from dispatch_plugins.sqlite import migrations, ops
from dispatch_plugins.sqlite.connection import configure, translate_errors, unavailable
from dispatch_plugins.sqlite.sync import SQLiteSyncStore
from dispatch_plugins.sqlite.url import SQLiteURL, parse_url
from dispatch_plugins.sqlite.watcher import DataVersionWatcher

__all__ = ["SQLiteStore"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class SQLiteStore(Store):
    """A durable store in one SQLite file, shared safely by any number of processes.

    URL: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``, with optional
    ``?busy_timeout=5000`` (milliseconds a writer waits for the lock), ``poll_interval=0.001``
    and ``idle_poll_interval=0.005`` (seconds between two looks of the :meth:`listen` watcher
    when busy and when idle).

    Every operation is one function of :mod:`~dispatch_plugins.sqlite.ops` run on the
    aiosqlite connection's thread: one thread hop per call, however many statements it runs,
    and a transaction can never interleave with another coroutine's statements.

    Call :meth:`open` (and :meth:`migrate` once per database) before anything else; other
    methods raise :class:`~dispatch_core.errors.StoreUnavailableError` on a store that is not
    open. :meth:`sync` is the exception: the blocking producer opens its own connection.

    Args:
        url: The store URL.

    Raises:
        StoreURLError: the URL cannot be used (see :func:`~dispatch_plugins.sqlite.url.parse_url`).
    """

    scheme: ClassVar[str] = "sqlite"

    def __init__(self, url: str) -> None:
        self.url = url
        self.config: SQLiteURL = parse_url(url)
        self._db: aiosqlite.Connection | None = None
        self._raw: sqlite3.Connection | None = None
        self._opening: asyncio.Lock | None = None
        self._watchers: set[DataVersionWatcher] = set()
        self._sync: SQLiteSyncStore | None = None
        self._sync_lock = threading.Lock()  # sync() may be called from any thread
        # Which queues have limits, as last read: lets claim skip the limits transaction.
        self._limited = ops.LimitedQueues()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r})"

    @property
    def path(self) -> str:
        """The absolute path of the database file."""
        return self.config.path

    # -- plumbing ------------------------------------------------------------------------------

    async def _call(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """Run ``fn(connection, *args, **kwargs)`` on the connection's thread."""
        db, raw = self._db, self._raw
        if db is None or raw is None:
            raise StoreUnavailableError(
                f"{self!r} is not open: 'await store.open()' before using it"
            )
        with translate_errors(self.path):
            return await _on_thread(db, lambda: fn(raw, *args, **kwargs))

    def _notify(self) -> None:
        # In-process listeners hear of our own writes at once; other processes' watchers see
        # them through data_version within a poll interval.
        for watcher in list(self._watchers):
            watcher.wake()

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect (WAL mode, ``synchronous=NORMAL``, ``busy_timeout``). Idempotent.

        The database file is created if it does not exist; its directory is not.

        Raises:
            StoreUnavailableError: the file cannot be opened, or is not a SQLite database; the
                message names the path and the reason.
        """
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._db is not None:
                return
            cfg = self.config
            try:
                pending = aiosqlite.connect(
                    cfg.path, isolation_level=None, timeout=cfg.busy_timeout_ms / 1000
                )
                _daemonize(pending)
                db = await pending
            except sqlite3.Error as exc:
                # aiosqlite stops its thread after a failed connect, and the thread reports
                # that to this loop: wait for it while the loop runs, or it finds the loop
                # closed and prints "Event loop is closed" at exit. Polled: asyncio.to_thread
                # would leave a thread of the default executor behind.
                for _ in range(500):
                    if not pending._thread.is_alive():
                        break
                    await asyncio.sleep(0.01)
                raise unavailable(cfg.path, exc) from exc
            try:
                raw = _raw_connection(db)
                await _on_thread(
                    db, lambda: configure(raw, cfg.path, busy_timeout_ms=cfg.busy_timeout_ms)
                )
            except BaseException:
                await db.close()
                raise
            self._db, self._raw = db, raw

    async def close(self) -> None:
        """Stop the listeners, close the sync producer's and the store's connections.
        Idempotent."""
        for watcher in list(self._watchers):
            await watcher.stop()
        self._watchers.clear()
        if self._sync is not None:
            await asyncio.to_thread(self._sync.close)
        db, self._db, self._raw = self._db, None, None
        if db is not None:
            await db.close()

    async def migrate(self) -> list[str]:
        """Create or upgrade the schema; return the names of the migrations applied.

        Safe to run from several processes at once: the migrations run under the write lock
        and the second process finds nothing left to do.
        """
        return await self._call(migrations.migrate, self.path)

    async def listen(self, wake: Callable[[], None]) -> StopListening:
        """Call ``wake()`` whenever any connection, in any process, commits to the database.

        A task polls ``PRAGMA data_version`` on a connection of its own: every
        ``poll_interval`` (default 1 ms) while the database is busy, backing off to
        ``idle_poll_interval`` (default 5 ms) after a quiet second, so an idle process costs
        little CPU while a busy one hears of new work within a millisecond.
        """
        watcher = DataVersionWatcher(
            self.path,
            wake,
            interval=self.config.poll_interval,
            idle_interval=self.config.idle_poll_interval,
        )
        with translate_errors(self.path):
            await watcher.start(busy_timeout_ms=self.config.busy_timeout_ms)
        self._watchers.add(watcher)

        async def stop() -> None:
            self._watchers.discard(watcher)
            await watcher.stop()

        return stop

    def sync(self) -> SQLiteSyncStore:
        """The blocking producer API (stdlib ``sqlite3``), safe to call from any thread.

        One instance per store; it opens its own connection on first use, so it works whether
        or not this store is open. :meth:`close` closes its connection too.
        """
        with self._sync_lock:
            if self._sync is None:
                self._sync = SQLiteSyncStore(self.config)
            return self._sync

    # -- producing -----------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Insert ``jobs`` in one transaction (``executemany``); return them in order.

        A job whose ``unique_key`` is taken in its tenant is not written; the job holding the
        key is returned in its place. A job whose id another job has (a chosen id another
        tenant's job has) raises :class:`~dispatch_core.errors.JobIdTakenError`; nothing is
        written.
        """
        if not jobs:
            return []
        out = await self._call(ops.enqueue, jobs)
        self._notify()
        return out

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
        """Claim up to ``limit`` runnable jobs, honouring the queues' limits.

        With no limited queue among ``queues`` (the usual case) this is one
        ``UPDATE ... RETURNING`` statement, which leaves paused and limited queues out. When
        some are limited, one ``BEGIN IMMEDIATE`` transaction counts their running jobs,
        refills and takes their tokens, and claims them with the other queues' jobs: SQLite's
        single writer makes the limits exact across processes. Which queues are limited is
        read again every half second, after every short claim, and at once after this store
        changes a queue.
        """
        return await self._call(
            ops.claim,
            worker_id=worker_id,
            queues=queues,
            names=names,
            limit=limit,
            lease_seconds=lease_seconds,
            now=now,
            limited=self._limited,
        )

    async def heartbeat(
        self,
        *,
        worker_id: str,
        leases: Mapping[str, str],
        lease_seconds: float,
        now: datetime,
        worker: WorkerInfo | None = None,
    ) -> set[str]:
        """Extend leases with one statement, and upsert the worker's row with them in one
        transaction; return the ids whose lease is lost."""
        if not leases and worker is None:
            return set()
        return await self._call(
            ops.heartbeat, leases=leases, lease_seconds=lease_seconds, now=now, worker=worker
        )

    async def finish(self, outcomes: Sequence[Outcome], *, now: datetime) -> list[bool]:
        """Record attempt ends, fenced by attempt token; one statement for a batch of
        completions, one transaction otherwise."""
        if not outcomes:
            return []
        return await self._call(ops.finish, outcomes, now=now)

    async def rescue_expired(
        self, *, now: datetime, worker_timeout: float | None = None
    ) -> list[Job]:
        """Recover running jobs whose lease ended before ``now`` or whose worker is gone; see
        the contract. A read answers the usual "nothing to do" without the write lock."""
        rescued = await self._call(ops.rescue_expired, now=now, worker_timeout=worker_timeout)
        if rescued:
            self._notify()
        return rescued

    async def next_run_at(
        self, *, queues: Collection[str] | None, names: Collection[str] | None
    ) -> datetime | None:
        """The earliest ``run_at`` among matching pending or retrying jobs."""
        return await self._call(ops.next_run_at, queues=queues, names=names)

    # -- inspection and control ----------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job:
        """Return the job or raise :class:`~dispatch_core.errors.JobNotFoundError`."""
        return await self._call(ops.get_job, job_id)

    async def list_jobs(self, filter: JobFilter) -> list[Job]:
        """Jobs matching ``filter``, by id in ``filter.order`` past the cursor
        ``filter.after``: a range on the primary key, read in order."""
        return await self._call(ops.list_jobs, filter)

    async def count_jobs(
        self, *, queue: str | None = None, tenant: str | None = None
    ) -> dict[JobState, int]:
        """The number of jobs in each state that has any."""
        return await self._call(ops.count_jobs, queue=queue, tenant=tenant)

    async def count_runnable(
        self,
        *,
        now: datetime,
        tenant: str | None = None,
        exclude_names: Collection[str] = (),
    ) -> list[RunnableCount]:
        """Runnable jobs by queue and name: one read (no write lock, so claims in other
        processes go on) over the runnable rows' index, grouped and ordered by SQLite."""
        return await self._call(
            ops.count_runnable, now=now, tenant=tenant, exclude_names=exclude_names
        )

    async def throughput(
        self,
        *,
        since: datetime,
        bucket_seconds: int,
        queue: str | None = None,
        tenant: str | None = None,
    ) -> list[ThroughputBucket]:
        """Completed and failed jobs per epoch-aligned bucket since ``since``, counted by one
        ``GROUP BY`` over the finished jobs' index."""
        return await self._call(
            ops.throughput, since=since, bucket_seconds=bucket_seconds, queue=queue, tenant=tenant
        )

    async def cancel(self, job_id: str, *, now: datetime) -> Job:
        """Cancel a pending, retrying or running job (a running one loses its lease)."""
        return await self._call(ops.cancel, job_id, now=now)

    async def retry(self, job_id: str, *, now: datetime) -> Job:
        """Send a failed or cancelled job back to ``pending`` with its attempts reset."""
        job = await self._call(ops.retry, job_id, now=now)
        self._notify()
        return job

    # -- the dead-letter queue -----------------------------------------------------------------

    async def list_dlq(self, filter: DLQFilter) -> list[DLQEntry]:
        """Dead-letter entries matching ``filter``, by id (failure order) in
        ``filter.order`` past the cursor ``filter.after``."""
        return await self._call(ops.list_dlq, filter)

    async def count_dlq(
        self,
        *,
        queue: str | None = None,
        tenant: str | None = None,
        replayed: bool | None = None,
        before: datetime | None = None,
    ) -> int:
        """The number of dead-letter entries, optionally of one queue and one tenant, never
        replayed or replayed, failed before ``before``."""
        return await self._call(
            ops.count_dlq, queue=queue, tenant=tenant, replayed=replayed, before=before
        )

    async def get_dlq(self, entry_id: str) -> DLQEntry:
        """Return the entry or raise :class:`~dispatch_core.errors.DLQEntryNotFoundError`."""
        return await self._call(ops.get_dlq, entry_id)

    async def replay_dlq(self, entry_id: str, *, new_job_id: str, now: datetime) -> Job:
        """Enqueue a fresh copy of the entry's job and stamp the entry, in one transaction."""
        job = await self._call(ops.replay_dlq, entry_id, new_job_id=new_job_id, now=now)
        self._notify()
        return job

    async def purge_dlq(
        self,
        *,
        before: datetime,
        queue: str | None = None,
        tenant: str | None = None,
        limit: int | None = None,
    ) -> int:
        """Delete entries that failed before ``before`` (of one queue and one tenant when
        given), oldest id first and at most ``limit``, in one statement; return how many."""
        return await self._call(
            ops.purge_dlq, before=before, queue=queue, tenant=tenant, limit=limit
        )

    # -- the cluster: workers and the leader ---------------------------------------------------

    async def register_worker(self, worker: WorkerInfo) -> None:
        """Insert or replace the worker's row, as given."""
        await self._call(ops.register_worker, worker)

    async def deregister_worker(self, worker_id: str, *, now: datetime) -> None:
        """Mark the worker ``stopped`` and give up its leader lease, in one transaction."""
        await self._call(ops.deregister_worker, worker_id, now=now)

    async def list_workers(self) -> list[WorkerInfo]:
        """Every worker row, oldest first, the leader lease's holder marked."""
        return await self._call(ops.list_workers)

    async def acquire_leadership(self, *, worker_id: str, ttl: float, now: datetime) -> bool:
        """Take or renew the leader lease with one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE
        ... RETURNING`` statement; return whether ``worker_id`` holds it."""
        return await self._call(ops.acquire_leadership, worker_id=worker_id, ttl=ttl, now=now)

    async def release_leadership(self, worker_id: str) -> None:
        """Give up the leader lease if ``worker_id`` holds it."""
        await self._call(ops.release_leadership, worker_id)

    async def get_leader(self, *, now: datetime) -> str | None:
        """The holder of the unexpired leader lease, or ``None``."""
        return await self._call(ops.get_leader, now=now)

    # -- cron ----------------------------------------------------------------------------------

    async def upsert_cron(self, entries: Sequence[CronEntry], *, now: datetime) -> None:
        """Register entries in one transaction; see the contract for what an update keeps."""
        await self._call(ops.upsert_cron, entries, now=now)

    async def list_cron(self) -> list[CronEntry]:
        """Every entry, by name."""
        return await self._call(ops.list_cron)

    async def get_cron(self, name: str) -> CronEntry:
        """Return the entry or raise :class:`~dispatch_core.errors.CronNotFoundError`."""
        return await self._call(ops.get_cron, name)

    async def set_cron_enabled(
        self, name: str, *, enabled: bool, next_run_at: datetime, now: datetime
    ) -> CronEntry:
        """Enable (with a new ``next_run_at``) or disable an entry."""
        return await self._call(
            ops.set_cron_enabled, name, enabled=enabled, next_run_at=next_run_at, now=now
        )

    async def fire_cron(
        self,
        *,
        name: str,
        tick: datetime,
        next_run_at: datetime,
        job: NewJob | None,
        now: datetime,
    ) -> Job | None:
        """Fire one tick in one write transaction: compare-and-set ``next_run_at``, then
        enqueue the job by its unique key."""
        fired = await self._call(
            ops.fire_cron, name=name, tick=tick, next_run_at=next_run_at, job=job, now=now
        )
        if fired is not None:
            self._notify()
        return fired

    async def delete_cron(self, name: str) -> bool:
        """Delete an entry; return whether it existed."""
        return await self._call(ops.delete_cron, name)

    # -- queues --------------------------------------------------------------------------------

    async def set_queue(self, config: QueueConfig) -> None:
        """Create or replace the queue's limits (its paused flag and bucket level kept)."""
        await self._call(ops.set_queue, config)
        self._limited.invalidate()
        self._notify()  # limits may have loosened

    async def pause_queue(self, name: str, *, paused: bool) -> None:
        """Pause or resume a queue."""
        await self._call(ops.pause_queue, name, paused=paused)
        self._limited.invalidate()
        if not paused:
            self._notify()

    async def list_queues(self, *, now: datetime) -> list[QueueStats]:
        """Every queue with jobs or a row, by name, with its counts."""
        return await self._call(ops.list_queues, now=now)

    # -- retention -----------------------------------------------------------------------------

    async def prune(self, cutoffs: PruneCutoffs, *, limit: int = 10_000) -> int:
        """Delete finished jobs, dead-letter entries and worker rows older than the cutoffs,
        at most ``limit`` of each kind, one short transaction per kind."""
        return await self._call(ops.prune, cutoffs, limit=limit)

    # -- durable workflows ---------------------------------------------------------------------

    async def create_run(self, run: NewRun, driver: NewJob) -> WorkflowRun:
        """Insert the run and its first driver job in one write transaction; an id that
        exists already writes nothing and returns the stored run."""
        created = await self._call(ops.create_run, run, driver)
        self._notify()
        return created

    async def get_run(self, run_id: str) -> WorkflowRun:
        """Return the run or raise :class:`~dispatch_core.errors.RunNotFoundError`."""
        return await self._call(ops.get_run, run_id)

    async def list_runs(self, filter: RunFilter) -> list[WorkflowRun]:
        """Runs matching ``filter``, by id in ``filter.order`` past the cursor
        ``filter.after``."""
        return await self._call(ops.list_runs, filter)

    async def list_steps(self, run_id: str) -> list[StepRecord]:
        """The run's history, by ``seq``."""
        return await self._call(ops.list_steps, run_id)

    async def save_step(self, run_id: str, step: StepRecord, *, now: datetime) -> StepRecord:
        """Insert the record, or replace a pending one, with one upsert whose ``DO UPDATE``
        skips finished records; return the stored record."""
        return await self._call(ops.save_step, run_id, step, now=now)

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
        """Check the condition, write the run and enqueue ``driver`` in one ``BEGIN
        IMMEDIATE`` transaction; see the contract."""
        updated = await self._call(
            ops.update_run,
            run_id,
            state=state,
            now=now,
            expect=expect,
            generation=generation,
            output=output,
            error=error,
            wake_at=wake_at,
            waiting_for=waiting_for,
            driver=driver,
        )
        if updated is not None and driver is not None:
            self._notify()
        return updated

    async def set_run_version(
        self, run_id: str, version: int, *, generation: int, now: datetime
    ) -> WorkflowRun | None:
        """Compare-and-set the run's version on its generation, in one write transaction;
        ``None`` when the run is terminal or its generation moved on."""
        return await self._call(
            ops.set_run_version, run_id, version, generation=generation, now=now
        )

    async def send_event(self, event: NewEvent, *, driver: NewJob, now: datetime) -> bool:
        """Store the event and wake the run if it waits for it, in one write transaction."""
        woken = await self._call(ops.send_event, event, driver=driver, now=now)
        if woken:
            self._notify()
        return woken

    async def take_event(
        self, run_id: str, name: str, *, seq: int, now: datetime
    ) -> WorkflowEvent | None:
        """Consume the oldest unconsumed event ``name`` of the run for ``seq`` (or return the
        one ``seq`` consumed already), in one write transaction."""
        return await self._call(ops.take_event, run_id, name, seq=seq, now=now)


# aiosqlite has no public way to run a callable on its connection thread; ``_execute`` (present
# since aiosqlite 0.11, unchanged through 0.22) is what its own helpers use. Going through it
# keeps a whole transaction in one thread hop, and a cancelled caller cannot leave a
# transaction half done. Both uses of its internals are here.


def _daemonize(db: aiosqlite.Connection) -> None:
    # aiosqlite's connection thread is not a daemon: a program that forgets
    # ``await engine.aclose()`` would hang at exit waiting for it. SQLite's journal makes an
    # interrupted write atomic, so letting the interpreter exit past the thread is safe.
    db._thread.daemon = True


def _raw_connection(db: aiosqlite.Connection) -> sqlite3.Connection:
    return db._conn


def _on_thread(db: aiosqlite.Connection, fn: Callable[[], _T]) -> Awaitable[_T]:
    execute = cast(Callable[[Callable[[], Any]], Awaitable[Any]], db._execute)
    return cast(Awaitable[_T], execute(fn))
