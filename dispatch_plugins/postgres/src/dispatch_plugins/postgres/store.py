"""The async PostgreSQL store, on psycopg 3 and psycopg_pool."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

import psycopg

from dispatch_core.cluster import WorkerInfo
from dispatch_core.cron import CronEntry
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
from dispatch_core.storekit import claim_order
from dispatch_core.workflows.models import (
    NewEvent,
    NewRun,
    RunFilter,
    RunState,
    StepRecord,
    WorkflowEvent,
    WorkflowRun,
)
from dispatch_plugins.postgres import ops
from dispatch_plugins.postgres.connection import (
    AsyncPool,
    AsyncWatchdog,
    WrongConnectionError,
    connect_async,
    make_async_pool,
    run_async,
    store_error,
    unavailable,
    wrong_connection,
)
from dispatch_plugins.postgres.listener import Listener
from dispatch_plugins.postgres.runner import PoolRunner, close_at_loop_end, migrate_op
from dispatch_plugins.postgres.sync import PostgresSyncStore
from dispatch_plugins.postgres.url import PostgresURL, parse_url

__all__ = ["PostgresStore", "WrongConnectionError"]


class PostgresStore(PoolRunner, Store):
    """A durable store in a PostgreSQL schema, shared by any number of processes and hosts.

    URL: ``postgresql://user:password@host:5432/dbname`` (or ``postgres://``) with optional
    ``?schema=dispatch&min_size=1&max_size=10&pool_timeout=10&prepare_threshold=5`` and
    timeouts (``statement_timeout=10&call_timeout=12``...); other query parameters go to
    libpq (see :mod:`~dispatch_plugins.postgres.url`).

    Operations run on an ``AsyncConnectionPool`` of autocommit connections, made by
    :meth:`open` and made again in a forked child (a pool is never shared across processes).
    Every operation is written once in :mod:`~dispatch_plugins.postgres.ops` and is
    almost always one statement: a claim is one ``UPDATE ... WHERE id = ANY(ARRAY(SELECT ...
    FOR UPDATE SKIP LOCKED)) RETURNING``, a batch of outcomes one statement whose CTEs also
    write the dead-letter entries.

    Call :meth:`open` (and :meth:`migrate` once per schema) before anything else; other
    methods raise :class:`~dispatch_core.errors.StoreUnavailableError` on a store that is not
    open. :meth:`sync` is the exception: the blocking producer has its own pool.

    Args:
        url: The store URL.

    Raises:
        StoreURLError: the URL cannot be used (see
            :func:`~dispatch_plugins.postgres.url.parse_url`).
    """

    scheme: ClassVar[str] = "postgresql"
    #: Every call has its own deadline (``call_timeout``, ``statement_timeout``).
    bounds_calls: ClassVar[bool] = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.config: PostgresURL = parse_url(url)
        self._q = ops.statements(self.config.schema, not self.config.worker_synchronous_commit)
        self._pool: AsyncPool | None = None
        self._pool_pid = 0
        self._pool_loop: asyncio.AbstractEventLoop | None = None
        #: The deadlines of the calls on the pool, in the pool's event loop.
        self._watchdog: AsyncWatchdog | None = None
        #: Closes the pool when its event loop ends with the store still open (see
        #: :func:`~dispatch_plugins.postgres.runner.close_at_loop_end`).
        self._custodian: asyncio.Task[None] | None = None
        self._opened = False
        self._opening: asyncio.Lock | None = None
        self._opening_loop: asyncio.AbstractEventLoop | None = None
        #: Whether the server must be probed before the next call: a connection was lost, or
        #: the pool could not connect. Cleared by a successful probe.
        self._down = False
        self._probing: asyncio.Task[str | None] | None = None
        self._probed_at = -math.inf
        self._listeners: set[Listener] = set()
        self._sync: PostgresSyncStore | None = None
        self._sync_lock = threading.Lock()  # sync() may be called from any thread
        # Set when a claim filled its limit while a limited queue had due jobs: the next claim
        # then goes through claim_limited first, so those jobs are not starved.
        self._limited_waiting = False

    def __repr__(self) -> str:
        return f"PostgresStore({self.config.display!r}, schema={self.config.schema!r})"

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding the store's tables."""
        return self.config.schema

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect. Idempotent; in a forked child, makes the child's own pool.

        One connection is made first, directly, so that an unreachable server, bad
        credentials or a missing database fail here with libpq's reason; then the pool
        (``min_size`` connections, grown up to ``max_size`` on demand) is opened.

        Raises:
            StoreUnavailableError: the server cannot be used; the message names
                ``user@host:port/dbname`` (never the password) and the reason.
        """
        loop = asyncio.get_running_loop()
        if self._opening is None or self._opening_loop is not loop:
            self._opening, self._opening_loop = asyncio.Lock(), loop
        async with self._opening:
            if self._pool_is_ours():
                return
            # A pool inherited through fork() belongs to the parent (its sockets are the
            # parent's), and one made in another event loop cannot run in this one: either is
            # dropped, never closed, here.
            self._pool = None
            conn = await connect_async(self.config)
            await conn.close()
            self._down, self._probed_at = False, time.monotonic()
            pool = make_async_pool(self.config, reconnect_failed=self._reconnect_failed)
            try:
                await pool.open()
            except psycopg.Error as exc:
                raise unavailable(self.config, exc) from exc
            self._pool, self._pool_pid, self._pool_loop = pool, os.getpid(), loop
            self._watchdog = AsyncWatchdog(loop)
            self._custodian = loop.create_task(
                close_at_loop_end(pool), name="dispatch-postgres pool custodian"
            )
            self._opened = True

    async def close(self) -> None:
        """Stop the listeners and close the sync producer's and the store's pools.
        Idempotent.

        A store left open has its pool closed when ``asyncio.run()`` ends its event loop
        (see :func:`~dispatch_plugins.postgres.runner.close_at_loop_end`), so such a program
        still exits at once.
        """
        for listener in list(self._listeners):
            with contextlib.suppress(RuntimeError):  # its event loop is gone
                await listener.stop()
        self._listeners.clear()
        if self._sync is not None:
            await asyncio.to_thread(self._sync.close)
        probing, self._probing = self._probing, None
        if probing is not None and probing.get_loop() is asyncio.get_running_loop():
            probing.cancel()
            with contextlib.suppress(BaseException):
                await probing
        ours = self._pool_is_ours()
        pool, self._pool, self._opened = self._pool, None, False
        watchdog, self._watchdog = self._watchdog, None
        custodian, self._custodian = self._custodian, None
        if pool is not None and ours:
            await pool.close()
            if watchdog is not None:
                watchdog.close()
            if custodian is not None:
                custodian.cancel()  # the pool is closed: it has nothing left to do
                with contextlib.suppress(asyncio.CancelledError):
                    await custodian

    async def migrate(self) -> list[str]:
        """Create or upgrade the schema; return the names of the migrations applied.

        Safe to run from several processes at once: the migration transaction takes an
        advisory lock first, and the later processes find nothing left to do.
        """
        return await self._run(migrate_op, self.config.display)

    async def listen(self, wake: Callable[[], None]) -> StopListening:
        """Call ``wake()`` whenever a transaction that made jobs claimable commits, in any
        process: ``LISTEN dispatch_<schema>`` on a dedicated connection, which reconnects on
        its own after a connection loss (see :mod:`~dispatch_plugins.postgres.listener`).

        Raises:
            StoreUnavailableError: the listening connection cannot be made.
        """
        listener = Listener(self.config, wake)
        await listener.start()
        self._listeners.add(listener)

        async def stop() -> None:
            self._listeners.discard(listener)
            await listener.stop()

        return stop

    def sync(self) -> PostgresSyncStore:
        """The blocking producer API (psycopg's ``ConnectionPool``), safe from any thread.

        One instance per store; its pool opens on first use, so it works whether or not this
        store is open. :meth:`close` closes it too.
        """
        with self._sync_lock:
            if self._sync is None:
                self._sync = PostgresSyncStore(self.config)
            return self._sync

    # -- producing -----------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Insert ``jobs`` in one transaction and notify the listeners on commit.

        A job whose ``unique_key`` is taken in its tenant is not written; the job holding the
        key is returned in its place. A job whose id another job has (a chosen id another
        tenant's job has) raises :class:`~dispatch_core.errors.JobIdTakenError`; nothing is
        written. One statement for one job or a small batch; a large batch without unique
        keys is copied in (binary ``COPY``).
        """
        if not jobs:
            return []
        return await self._run(ops.enqueue, jobs)

    async def enqueue_in(self, conn: object, jobs: Sequence[NewJob]) -> list[Job]:
        """Write ``jobs`` through the caller's ``psycopg.AsyncConnection``, in the caller's
        transaction: nothing is committed here. A rollback leaves no job; the commit makes them
        visible and wakes the listeners (the notification is part of the transaction).

        Raises:
            WrongConnectionError: ``conn`` is not a ``psycopg.AsyncConnection``.
            JobIdTakenError: a job's chosen id is another tenant's job's; the statement
                failed, so the caller's transaction must be rolled back.
        """
        if not isinstance(conn, psycopg.AsyncConnection):
            raise WrongConnectionError(wrong_connection(conn, "psycopg.AsyncConnection"))
        if not jobs:
            return []
        try:
            return await run_async(conn, ops.enqueue(self._q, jobs), own=False)
        except psycopg.Error as exc:
            err = store_error(self.config, exc)
            if err is exc:
                raise
            raise err from exc

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
        """Claim up to ``limit`` runnable jobs, honouring the queues' rows.

        Without a limited queue that has due jobs, one ``UPDATE ... SKIP LOCKED`` statement
        that leaves paused and limited queues alone (reading the small ``queues`` table in
        the same statement, so a pause is exact), and that also says whether a limited queue
        has due jobs it might start. Then :func:`~dispatch_plugins.postgres.ops.claim
        .claim_limited` claims under the limits in a transaction that locks the queues' rows:
        for the rest of this claim, or for the whole next one when this one was full.
        """
        args: dict[str, Any] = {
            "worker_id": worker_id,
            "queues": queues,
            "names": names,
            "lease_seconds": lease_seconds,
            "now": now,
        }
        if self._limited_waiting:
            self._limited_waiting = False
            return await self._run(ops.claim_limited, limit=limit, **args)
        jobs, waiting = await self._run(ops.claim, limit=limit, **args)
        if waiting:
            if len(jobs) < limit:
                more = await self._run(
                    ops.claim_limited, limit=limit - len(jobs), others=False, **args
                )
                if more:
                    jobs = sorted(jobs + more, key=claim_order)
            else:
                self._limited_waiting = True
        return jobs

    async def heartbeat(
        self,
        *,
        worker_id: str,
        leases: Mapping[str, str],
        lease_seconds: float,
        now: datetime,
        worker: WorkerInfo | None = None,
    ) -> set[str]:
        """Extend leases and upsert the worker's row with one statement; return the ids whose
        lease is lost."""
        if not leases and worker is None:
            return set()
        return await self._run(
            ops.heartbeat, leases=leases, lease_seconds=lease_seconds, now=now, worker=worker
        )

    async def finish(self, outcomes: Sequence[Outcome], *, now: datetime) -> list[bool]:
        """Record attempt ends, fenced by attempt token, in one statement per batch (failures
        and their dead-letter entries included)."""
        if not outcomes:
            return []
        return await self._run(ops.finish, outcomes, now=now)

    async def rescue_expired(
        self, *, now: datetime, worker_timeout: float | None = None
    ) -> list[Job]:
        """Recover the running jobs of expired leases, and with ``worker_timeout`` those of
        dead and stopped workers (marking silent workers dead first); see the contract."""
        return await self._run(ops.rescue_expired, now=now, worker_timeout=worker_timeout)

    async def next_run_at(
        self, *, queues: Collection[str] | None, names: Collection[str] | None
    ) -> datetime | None:
        """The earliest ``run_at`` among matching pending or retrying jobs (of queues that are
        not paused: a resume wakes the workers)."""
        return await self._run(ops.next_run_at, queues=queues, names=names)

    # -- inspection and control ----------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job:
        """Return the job or raise :class:`~dispatch_core.errors.JobNotFoundError`."""
        return await self._run(ops.get_job, job_id)

    async def list_jobs(self, filter: JobFilter) -> list[Job]:
        """Jobs matching ``filter``, by id in ``filter.order`` past the cursor
        ``filter.after`` (``id < $after ORDER BY id DESC LIMIT n``: the primary key, read
        from the cursor)."""
        return await self._run(ops.list_jobs, filter)

    async def count_jobs(
        self, *, queue: str | None = None, tenant: str | None = None
    ) -> dict[JobState, int]:
        """The number of jobs in each state that has any."""
        return await self._run(ops.count_jobs, queue=queue, tenant=tenant)

    async def count_runnable(
        self,
        *,
        now: datetime,
        tenant: str | None = None,
        exclude_names: Collection[str] = (),
    ) -> list[RunnableCount]:
        """Runnable jobs by queue and name: one plain ``SELECT`` (no row lock, so claims go
        on) over the due rows' index, grouped by the server."""
        return await self._run(
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
        return await self._run(
            ops.throughput, since=since, bucket_seconds=bucket_seconds, queue=queue, tenant=tenant
        )

    async def cancel(self, job_id: str, *, now: datetime) -> Job:
        """Cancel a pending, retrying or running job (a running one loses its lease)."""
        return await self._run(ops.cancel, job_id, now=now)

    async def retry(self, job_id: str, *, now: datetime) -> Job:
        """Send a failed or cancelled job back to ``pending`` with its attempts reset."""
        return await self._run(ops.retry, job_id, now=now)

    # -- the dead-letter queue -----------------------------------------------------------------

    async def list_dlq(self, filter: DLQFilter) -> list[DLQEntry]:
        """Dead-letter entries matching ``filter``, by id (failure order) in
        ``filter.order`` past the cursor ``filter.after``."""
        return await self._run(ops.list_dlq, filter)

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
        return await self._run(
            ops.count_dlq, queue=queue, tenant=tenant, replayed=replayed, before=before
        )

    async def get_dlq(self, entry_id: str) -> DLQEntry:
        """Return the entry or raise :class:`~dispatch_core.errors.DLQEntryNotFoundError`."""
        return await self._run(ops.get_dlq, entry_id)

    async def replay_dlq(self, entry_id: str, *, new_job_id: str, now: datetime) -> Job:
        """Enqueue a fresh copy of the entry's job and stamp the entry, in one transaction."""
        return await self._run(ops.replay_dlq, entry_id, new_job_id=new_job_id, now=now)

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
        return await self._run(
            ops.purge_dlq, before=before, queue=queue, tenant=tenant, limit=limit
        )

    # -- the cluster: workers and the leader -----------------------------------------------------

    async def register_worker(self, worker: WorkerInfo) -> None:
        """Insert or replace the worker's row."""
        await self._run(ops.register_worker, worker)

    async def deregister_worker(self, worker_id: str, *, now: datetime) -> None:
        """Mark the worker stopped and give up its leader lease, in one statement."""
        await self._run(ops.deregister_worker, worker_id, now=now)

    async def list_workers(self) -> list[WorkerInfo]:
        """Every worker row, oldest first, the lease holder marked ``leader``."""
        return await self._run(ops.list_workers)

    async def acquire_leadership(self, *, worker_id: str, ttl: float, now: datetime) -> bool:
        """Take or renew the leader lease with one atomic upsert (``INSERT ... ON CONFLICT DO
        UPDATE ... WHERE holder = me OR expires_at <= now RETURNING``)."""
        return await self._run(ops.acquire_leadership, worker_id=worker_id, ttl=ttl, now=now)

    async def release_leadership(self, worker_id: str) -> None:
        """Give up the leader lease if ``worker_id`` holds it."""
        await self._run(ops.release_leadership, worker_id)

    async def get_leader(self, *, now: datetime) -> str | None:
        """The holder of an unexpired leader lease, or ``None``."""
        return await self._run(ops.get_leader, now=now)

    # -- cron ------------------------------------------------------------------------------------

    async def upsert_cron(self, entries: Sequence[CronEntry], *, now: datetime) -> None:
        """Register entries in one statement; see the contract for what an update keeps."""
        if entries:
            await self._run(ops.upsert_cron, entries, now=now)

    async def list_cron(self) -> list[CronEntry]:
        """Every entry, by name."""
        return await self._run(ops.list_cron)

    async def get_cron(self, name: str) -> CronEntry:
        """Return the entry or raise :class:`~dispatch_core.errors.CronNotFoundError`."""
        return await self._run(ops.get_cron, name)

    async def set_cron_enabled(
        self, name: str, *, enabled: bool, next_run_at: datetime, now: datetime
    ) -> CronEntry:
        """Enable (from ``next_run_at``) or disable an entry."""
        return await self._run(
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
        """Fire one tick at most once: a compare-and-set on the entry's ``next_run_at`` and
        the job's insert, in one transaction."""
        return await self._run(
            ops.fire_cron, name=name, tick=tick, next_run_at=next_run_at, job=job, now=now
        )

    async def delete_cron(self, name: str) -> bool:
        """Delete an entry; return whether it existed."""
        return await self._run(ops.delete_cron, name)

    # -- queues ----------------------------------------------------------------------------------

    async def set_queue(self, config: QueueConfig) -> None:
        """Create or replace the queue's limits (the pause flag and bucket level stay)."""
        await self._run(ops.set_queue, config)

    async def pause_queue(self, name: str, *, paused: bool) -> None:
        """Pause or resume a queue, for every worker at once."""
        await self._run(ops.pause_queue, name, paused=paused)

    async def list_queues(self, *, now: datetime) -> list[QueueStats]:
        """Every queue with jobs or a row: depth, running, completed in the last minute."""
        return await self._run(ops.list_queues, now=now)

    # -- retention -------------------------------------------------------------------------------

    async def prune(self, cutoffs: PruneCutoffs, *, limit: int = 10_000) -> int:
        """Delete old finished jobs, dead-letter entries and worker rows, at most ``limit``
        of each kind, each kind in its own short transaction."""
        return await self._run(ops.prune, cutoffs, limit=limit)

    # -- durable workflows -----------------------------------------------------------------------

    async def create_run(self, run: NewRun, driver: NewJob) -> WorkflowRun:
        """Write a new run (``running``, generation 0) and its first driver job in one
        transaction; a taken id writes nothing and returns the stored run."""
        return await self._run(ops.create_run, run, driver)

    async def get_run(self, run_id: str) -> WorkflowRun:
        """Return the run or raise :class:`~dispatch_core.errors.RunNotFoundError`."""
        return await self._run(ops.get_run, run_id)

    async def list_runs(self, filter: RunFilter) -> list[WorkflowRun]:
        """Runs matching ``filter``, by id in ``filter.order`` past the cursor
        ``filter.after``."""
        return await self._run(ops.list_runs, filter)

    async def list_steps(self, run_id: str) -> list[StepRecord]:
        """The run's history, by ``seq`` (empty for an unknown run)."""
        return await self._run(ops.list_steps, run_id)

    async def save_step(self, run_id: str, step: StepRecord, *, now: datetime) -> StepRecord:
        """Insert a history record or replace a pending one, with one upsert; a finished
        record is never changed and is returned instead."""
        return await self._run(ops.save_step, run_id, step, now=now)

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
        """Change a run's state if it is as expected, with its driver job, in one transaction
        that locks the run's row first (``SELECT ... FOR UPDATE``); see the contract."""
        return await self._run(
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

    async def set_run_version(
        self, run_id: str, version: int, *, generation: int, now: datetime
    ) -> WorkflowRun | None:
        """Move a non-terminal run to ``version`` if its generation is still ``generation``,
        with one conditional update; ``None`` when the condition fails."""
        return await self._run(ops.set_run_version, run_id, version, generation=generation, now=now)

    async def send_event(self, event: NewEvent, *, driver: NewJob, now: datetime) -> bool:
        """Store an event and wake its run if it waits for it, in one transaction that locks
        the run's row first; return whether it was woken."""
        return await self._run(ops.send_event, event, driver=driver, now=now)

    async def take_event(
        self, run_id: str, name: str, *, seq: int, now: datetime
    ) -> WorkflowEvent | None:
        """Consume the run's oldest unconsumed event ``name`` for ``seq`` (or return the one
        ``seq`` already consumed); ``None`` when there is none."""
        return await self._run(ops.take_event, run_id, name, seq=seq, now=now)
