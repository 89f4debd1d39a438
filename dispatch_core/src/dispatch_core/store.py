"""The store contract: what a backend must do for the engine and the worker.

A store is an :class:`abc.ABC` subclass registered under a URL scheme through the
``dispatch_register_stores`` hook. The conformance suite in :mod:`dispatch_core.testing`
checks every rule written here; a store that passes it works with the engine.

The hot path is batched: :meth:`Store.claim`, :meth:`Store.heartbeat` and :meth:`Store.finish`
each carry many jobs in one call, so a backend can do one round trip per batch.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import ClassVar, Protocol

import attrs

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
from dispatch_core.workflows.models import (
    NewEvent,
    NewRun,
    RunFilter,
    RunState,
    StepRecord,
    WorkflowEvent,
    WorkflowRun,
)

__all__ = ["Store", "SyncStore", "StopListening", "PruneCutoffs"]


#: Returned by :meth:`Store.listen`; awaiting it stops the listener.
StopListening = Callable[[], Awaitable[None]]


@attrs.frozen(kw_only=True)
class PruneCutoffs:
    """What :meth:`Store.prune` deletes: rows older than each cutoff (``None``: keep all)."""

    #: Completed jobs that finished before this.
    completed: datetime | None = None
    #: Failed jobs (their dead-letter entries are pruned separately) that finished before this.
    failed: datetime | None = None
    #: Cancelled jobs that finished before this.
    cancelled: datetime | None = None
    #: Dead-letter entries that failed before this.
    dlq: datetime | None = None
    #: Stopped or dead worker rows last seen before this.
    workers: datetime | None = None


class SyncStore(Protocol):
    """The blocking subset a producer needs, for code that has no event loop (Flask, scripts).

    Backends implement it with their synchronous driver (``sqlite3``, psycopg's sync pool,
    ``redis.Redis``); it must be safe to call from any thread. A SQL backend may also offer
    ``enqueue_in(conn, jobs) -> list[Job]``, the blocking twin of :meth:`Store.enqueue_in`,
    which ``engine.enqueue(..., conn=...)`` uses.
    """

    def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Blocking twin of :meth:`Store.enqueue`."""
        ...

    def get_job(self, job_id: str) -> Job:
        """Blocking twin of :meth:`Store.get_job`."""
        ...

    def cancel(self, job_id: str) -> Job:
        """Blocking twin of :meth:`Store.cancel`."""
        ...

    def close(self) -> None:
        """Release the sync connection(s)."""
        ...


class Store(abc.ABC):
    """A durable home for jobs and dead-letter entries.

    Rules every implementation keeps (the conformance suite checks each one):

    * ``claim`` is atomic: two concurrent claimers never receive the same job.
    * Writes about a running job (``finish``, ``heartbeat``) take effect only while the
      caller's attempt token is the job's current token (fencing).
    * State changes follow :data:`dispatch_core.states.TRANSITIONS`; an illegal one raises
      :class:`~dispatch_core.errors.InvalidTransitionError` and writes nothing.
    * A terminal failure and its dead-letter entry are written together or not at all.
    * ``claim`` honours the queues' limits (:class:`~dispatch_core.queues.QueueConfig`) across
      every process that shares the store, and never claims from a paused queue.
    * At most one worker holds the leader lease at any instant.
    * A cron tick is fired at most once (:meth:`fire_cron` is a compare-and-set).
    """

    #: URL scheme(s) this store answers to, e.g. ``"sqlite"``.
    scheme: ClassVar[str] = ""
    #: Whether one instance may be called from several threads' event loops at once. When it
    #: may not (the usual case: a pool belongs to one loop), a worker's stall guard opens a
    #: second instance from the same URL (see :mod:`dispatch_core._stall`).
    thread_safe: ClassVar[bool] = False
    #: Whether every call of this store has a deadline of its own (a store that bounds its
    #: sockets, as PostgreSQL's ``call_timeout``): a worker then adds none of its own
    #: (``Worker.store_timeout``), which costs a timer per call.
    bounds_calls: ClassVar[bool] = False

    # -- lifecycle ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect. Idempotent. Raise :class:`StoreUnavailableError` with the reason on failure."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect and release resources. Idempotent."""

    @abc.abstractmethod
    async def migrate(self) -> list[str]:
        """Bring the schema to the current version; return the names of the migrations applied."""

    async def listen(self, wake: Callable[[], None]) -> StopListening | None:
        """Call ``wake()`` whenever jobs may have become claimable, from any process.

        ``wake`` is thread-safe and cheap; calling it too often is harmless. Return a coroutine
        function that stops listening, or ``None`` when the store cannot notify (the worker
        then polls with idle backoff).
        """
        return None

    def sync(self) -> SyncStore | None:
        """Return the blocking producer API, or ``None`` to let the engine run async calls in a
        private event-loop thread."""
        return None

    # -- producing ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Persist ``jobs`` (state ``pending``) in one transaction and return them in order.

        A ``unique_key`` is unique within a tenant: a job whose key is already held by a job
        of the same tenant is not written, and that job is returned in its place (jobs without
        a tenant form one scope of their own, so they dedupe among themselves). A job of
        another tenant never matches: the new job is written beside it. Within one call, the
        first job with a given key and tenant is written and the later ones return it.

        Raises:
            JobIdTakenError: a job's ``id`` is already the id of a job it does not dedupe
                with (a chosen id, ``job_id=``, that another tenant's job has); nothing of
                the call is written.
        """

    async def enqueue_in(self, conn: object, jobs: Sequence[NewJob]) -> list[Job]:
        """Write ``jobs`` through the caller's open connection, inside the caller's transaction,
        so that a rollback leaves no job (transactional enqueue). Optional: SQL stores
        implement it for their driver's connection type; the default refuses.

        Raises:
            NotImplementedError: this store cannot join a caller's transaction.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot enqueue in a caller's transaction")

    # -- the worker's hot path -----------------------------------------------------------------

    @abc.abstractmethod
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
        """Atomically claim up to ``limit`` runnable jobs.

        Runnable means state ``pending`` or ``retrying`` with ``run_at <= now``, in one of
        ``queues`` (``None``: any queue) and with a name in ``names`` (``None``: any name).
        Order: priority descending, then run_at, then id. Each claimed job becomes ``running``
        with ``attempt + 1``, ``worker_id``, a fresh ``attempt_token``, ``started_at = now`` and
        ``lease_expires_at = now + lease_seconds``.

        Queue rows (:meth:`set_queue`, :meth:`pause_queue`) restrict it, across every process
        that shares the store:

        * a paused queue's jobs are not claimed;
        * with ``concurrency`` C, the queue never has more than C running jobs (with
          ``per_tenant``, no tenant of the queue has more than C; jobs without a tenant count
          as one tenant);
        * with ``rate`` R, a token bucket of ``bucket_size`` tokens, refilled at R per second
          of ``now`` (:class:`~dispatch_core.queues.TokenBucket`), gives one token per claimed
          job; no token, no claim (with ``per_tenant``, one bucket per tenant).

        Jobs held back by a limit do not block jobs of other queues (or other tenants).
        """

    @abc.abstractmethod
    async def heartbeat(
        self,
        *,
        worker_id: str,
        leases: Mapping[str, str],
        lease_seconds: float,
        now: datetime,
        worker: WorkerInfo | None = None,
    ) -> set[str]:
        """Extend the leases of running jobs (``{job_id: attempt_token}``), and refresh the
        worker's row, in one call.

        With ``worker``, its row is upserted with ``last_seen = now`` and state ``running``
        (a worker marked dead by the leader comes back; its rescued jobs stay lost to it).

        Return the ids whose lease is lost (token changed, job cancelled or rescued); the
        worker stops those attempts.
        """

    @abc.abstractmethod
    async def finish(self, outcomes: Sequence[Outcome], *, now: datetime) -> list[bool]:
        """Record the end of attempts; return, per outcome, whether it was written.

        An outcome is written only if the job is ``running`` with that ``attempt_token``.
        ``COMPLETED`` -> completed; ``RETRY`` -> retrying at ``run_at``; ``FAIL`` -> failed plus
        a dead-letter entry, atomically; ``RELEASE`` -> pending with the attempt given back.
        """

    @abc.abstractmethod
    async def rescue_expired(
        self, *, now: datetime, worker_timeout: float | None = None
    ) -> list[Job]:
        """Recover running jobs whose worker is gone; return them as rescued.

        A running job is rescued when its lease expired before ``now``. With
        ``worker_timeout``, first every ``running`` worker row whose ``last_seen`` is older than
        ``now - worker_timeout`` is marked ``dead``; then the running jobs of ``dead`` and
        ``stopped`` workers are rescued too, whatever their lease says.

        The lost attempt counts: a job with attempts left becomes ``retrying`` (runnable at
        once), one without becomes ``failed`` and is dead-lettered. Its token is cleared, so
        the old worker's late writes are refused (fencing).
        """

    @abc.abstractmethod
    async def next_run_at(
        self, *, queues: Collection[str] | None, names: Collection[str] | None
    ) -> datetime | None:
        """The earliest ``run_at`` among runnable-state jobs that match, or ``None``.

        A store may leave out the jobs of paused queues. A due job the claim does not return
        (held back by a pause or a limit) makes the worker back off, not spin.
        """

    # -- inspection and control ----------------------------------------------------------------

    @abc.abstractmethod
    async def get_job(self, job_id: str) -> Job:
        """Return the job or raise :class:`JobNotFoundError`."""

    @abc.abstractmethod
    async def list_jobs(self, filter: JobFilter) -> list[Job]:
        """Jobs matching ``filter``, ordered by id in ``filter.order`` (newest first by
        default), starting strictly after the id ``filter.after`` when it is given, then
        skipping ``filter.offset``.

        With ``filter.preview`` N, a payload or result whose compact JSON text is longer than
        N bytes of UTF-8 comes back as :class:`~dispatch_core.models.Truncated` (``preview``:
        :meth:`Truncated.cut <dispatch_core.models.Truncated.cut>` of the text to N bytes,
        ``size``: the text's length in bytes); shorter ones, and ``None`` results, come back
        as they are. The cut is made where the body lives (in SQL, in the server-side
        script...), so a big body crosses neither the store's connection nor the caller's
        memory. ``None`` (the default) returns every body whole."""

    @abc.abstractmethod
    async def count_jobs(
        self, *, queue: str | None = None, tenant: str | None = None
    ) -> dict[JobState, int]:
        """The number of jobs in each state (states with none may be omitted), optionally of one
        queue and one tenant."""

    @abc.abstractmethod
    async def count_runnable(
        self,
        *,
        now: datetime,
        tenant: str | None = None,
        exclude_names: Collection[str] = (),
    ) -> list[RunnableCount]:
        """Runnable jobs counted by queue and name, for operators: which names wait.

        Runnable means state ``pending`` or ``retrying`` with ``run_at <= now`` (paused queues
        included). Jobs whose name is in ``exclude_names`` are left out, and so are other
        tenants' jobs when ``tenant`` is given. Rows are ordered by queue, then name; a pair
        with no runnable job has no row. Not on the hot path (workers call it about once a
        minute), but it must not lock or block claims.
        """

    @abc.abstractmethod
    async def throughput(
        self,
        *,
        since: datetime,
        bucket_seconds: int,
        queue: str | None = None,
        tenant: str | None = None,
    ) -> list[ThroughputBucket]:
        """Jobs that finished (``completed`` or ``failed``) at or after ``since``, counted per
        bucket of ``bucket_seconds`` aligned on the Unix epoch; only buckets with a count are
        returned, oldest first. The engine fills in the empty ones."""

    @abc.abstractmethod
    async def cancel(self, job_id: str, *, now: datetime) -> Job:
        """Cancel a pending, retrying or running job (a running one loses its lease)."""

    @abc.abstractmethod
    async def retry(self, job_id: str, *, now: datetime) -> Job:
        """Send a failed or cancelled job back to ``pending`` with its attempts reset."""

    # -- the dead-letter queue -------------------------------------------------------------------

    @abc.abstractmethod
    async def list_dlq(self, filter: DLQFilter) -> list[DLQEntry]:
        """Dead-letter entries matching ``filter``, ordered by id (the order they failed in)
        in ``filter.order``, after the cursor ``filter.after`` when given. With
        ``filter.preview``, payloads longer than that come back as
        :class:`~dispatch_core.models.Truncated`, as in :meth:`list_jobs`."""

    @abc.abstractmethod
    async def count_dlq(
        self,
        *,
        queue: str | None = None,
        tenant: str | None = None,
        replayed: bool | None = None,
        before: datetime | None = None,
    ) -> int:
        """The number of dead-letter entries, optionally only of one queue and one tenant,
        only those never replayed (``replayed=False``) or replayed (``True``), and only those
        that failed before ``before``."""

    @abc.abstractmethod
    async def get_dlq(self, entry_id: str) -> DLQEntry:
        """Return the entry or raise :class:`DLQEntryNotFoundError`."""

    @abc.abstractmethod
    async def replay_dlq(self, entry_id: str, *, new_job_id: str, now: datetime) -> Job:
        """Enqueue a fresh copy of the dead-lettered job (id ``new_job_id``, attempts reset) and
        stamp the entry's ``replayed_at`` / ``replay_job_id``, in one transaction."""

    @abc.abstractmethod
    async def purge_dlq(
        self,
        *,
        before: datetime,
        queue: str | None = None,
        tenant: str | None = None,
        limit: int | None = None,
    ) -> int:
        """Delete entries that failed before ``before`` (optionally only of one queue and one
        tenant), oldest first and at most ``limit`` of them when given; return how many."""

    # -- the cluster: workers and the leader ------------------------------------------------------

    @abc.abstractmethod
    async def register_worker(self, worker: WorkerInfo) -> None:
        """Insert or replace the worker's row, as given (its state included)."""

    @abc.abstractmethod
    async def deregister_worker(self, worker_id: str, *, now: datetime) -> None:
        """Mark the worker ``stopped`` (``last_seen = now``) and give up its leader lease if it
        holds it. Unknown ids are ignored."""

    @abc.abstractmethod
    async def list_workers(self) -> list[WorkerInfo]:
        """Every worker row, oldest ``started_at`` first, with ``leader`` set on the one that
        holds the leader lease (whether or not it has expired: callers compare times)."""

    @abc.abstractmethod
    async def acquire_leadership(self, *, worker_id: str, ttl: float, now: datetime) -> bool:
        """Become or stay the leader, atomically (one statement or a lock; never read then
        write).

        The lease is taken when nobody holds it, when it expired (``expires_at <= now``) or
        when ``worker_id`` already holds it; then it expires at ``now + ttl``. Return whether
        ``worker_id`` holds it now.
        """

    @abc.abstractmethod
    async def release_leadership(self, worker_id: str) -> None:
        """Give up the leader lease if ``worker_id`` holds it, so another worker may take it
        at once."""

    @abc.abstractmethod
    async def get_leader(self, *, now: datetime) -> str | None:
        """The id of the worker whose leader lease has not expired at ``now``, or ``None``."""

    # -- cron --------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def upsert_cron(self, entries: Sequence[CronEntry], *, now: datetime) -> None:
        """Register entries, in one transaction.

        A new name is inserted as given. An existing one takes the new ``expr``, ``timezone``,
        ``job_name``, ``payload``, ``queue``, ``misfire`` and ``misfire_grace`` and
        ``updated_at = now``; it keeps its ``enabled`` flag, ``last_run_at`` and
        ``last_job_id``; it takes the given ``next_run_at`` only if its ``expr`` or
        ``timezone`` changed (so re-registering the same schedule neither skips nor repeats
        a tick).
        """

    @abc.abstractmethod
    async def list_cron(self) -> list[CronEntry]:
        """Every entry, by name."""

    @abc.abstractmethod
    async def get_cron(self, name: str) -> CronEntry:
        """Return the entry or raise :class:`~dispatch_core.errors.CronNotFoundError`."""

    @abc.abstractmethod
    async def set_cron_enabled(
        self, name: str, *, enabled: bool, next_run_at: datetime, now: datetime
    ) -> CronEntry:
        """Enable or disable an entry (``updated_at = now``). Enabling also sets
        ``next_run_at`` (computed from now, so that the disabled time is not a misfire);
        disabling leaves it. Raise :class:`CronNotFoundError` for an unknown name."""

    @abc.abstractmethod
    async def fire_cron(
        self,
        *,
        name: str,
        tick: datetime,
        next_run_at: datetime,
        job: NewJob | None,
        now: datetime,
    ) -> Job | None:
        """Fire one tick, at most once, in one transaction.

        Only if the entry exists, is enabled and its ``next_run_at`` equals ``tick``: set
        ``next_run_at``, and, when ``job`` is given, enqueue it (by its unique key: a job
        that already has the key is returned instead) and set ``last_run_at = now`` and
        ``last_job_id``. Return the job, or ``None`` when nothing was enqueued (the
        compare-and-set failed, or ``job`` is ``None``: a skipped misfire).
        """

    @abc.abstractmethod
    async def delete_cron(self, name: str) -> bool:
        """Delete an entry; return whether it existed."""

    # -- queues ------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def set_queue(self, config: QueueConfig) -> None:
        """Create or replace the queue's limits, keeping its paused flag and its token
        bucket's level (capped at the new size)."""

    @abc.abstractmethod
    async def pause_queue(self, name: str, *, paused: bool) -> None:
        """Pause or resume a queue (a queue with no row gets one with no limits). Jobs of a
        paused queue stay where they are; running ones finish."""

    @abc.abstractmethod
    async def list_queues(self, *, now: datetime) -> list[QueueStats]:
        """Every queue that has jobs or a row, by name, with its depth, running jobs and the
        jobs it completed in the minute before ``now``."""

    # -- retention ---------------------------------------------------------------------------------

    @abc.abstractmethod
    async def prune(self, cutoffs: PruneCutoffs, *, limit: int = 10_000) -> int:
        """Delete finished jobs, dead-letter entries and worker rows older than the cutoffs,
        at most ``limit`` rows of each kind per call (so a big backlog is pruned in short
        transactions); return the number of rows deleted. Running, pending and retrying jobs
        are never deleted."""

    # -- durable workflows -------------------------------------------------------------------------
    #
    # A run is driven by jobs: the engine replays its handler in a job, against the history
    # kept here. These operations are what makes that safe: each one is atomic.

    @abc.abstractmethod
    async def create_run(self, run: NewRun, driver: NewJob) -> WorkflowRun:
        """Write a new run (state ``running``, generation 0) and its first driver job in one
        transaction; return the run.

        A run whose id already exists is not written again, nor is its driver: the stored run
        is returned (so a replay that starts a child run with a recorded id starts it once).
        """

    @abc.abstractmethod
    async def get_run(self, run_id: str) -> WorkflowRun:
        """Return the run or raise :class:`~dispatch_core.errors.RunNotFoundError`."""

    @abc.abstractmethod
    async def list_runs(self, filter: RunFilter) -> list[WorkflowRun]:
        """Runs matching ``filter``, ordered by id in ``filter.order`` (newest first by default),
        after the cursor ``filter.after`` when given. With ``filter.preview``, inputs and
        outputs longer than that come back as :class:`~dispatch_core.models.Truncated`, as
        in :meth:`list_jobs`."""

    @abc.abstractmethod
    async def list_steps(self, run_id: str) -> list[StepRecord]:
        """The run's history, by ``seq`` (empty for an unknown run)."""

    @abc.abstractmethod
    async def save_step(self, run_id: str, step: StepRecord, *, now: datetime) -> StepRecord:
        """Record a history entry, keyed by ``(run_id, step.seq)``, and return the stored one.

        A new seq is inserted. An existing ``pending`` record is replaced. An existing
        finished (``completed`` / ``failed``) record is never changed: it is returned as is, so
        that a second driver replaying the same run takes the first one's result. Raises
        :class:`RunNotFoundError` for an unknown run.
        """

    @abc.abstractmethod
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
        """Change a run's state, conditionally, and optionally enqueue a driver job with it, in
        one transaction.

        Only if the run's state is in ``expect`` (``None``: any non-terminal state) and, when
        given, its generation equals ``generation``; otherwise nothing is written and ``None``
        is returned. The write sets ``state``, ``output``, ``error``, ``wake_at``,
        ``waiting_for`` and ``updated_at = now`` (``finished_at = now`` for a terminal state).
        Parking (``sleeping`` / ``waiting``) increments the generation. ``driver``, when
        given, is enqueued in the same transaction (honouring its unique key). Returns the
        updated run. Raises :class:`RunNotFoundError` for an unknown run.

        Parking as ``waiting`` for an event that has already arrived (an unconsumed event of
        that name for the run) writes nothing and returns ``None``: the caller takes the event
        instead. With :meth:`send_event` this closes the gap between "no event yet" and
        "parked" where a wake-up could be lost.
        """

    @abc.abstractmethod
    async def set_run_version(
        self, run_id: str, version: int, *, generation: int, now: datetime
    ) -> WorkflowRun | None:
        """Move a non-terminal run to another version of its workflow (``updated_at = now``),
        only if its generation still equals ``generation``; return the run, or ``None`` when
        the condition fails (nothing written). Raises :class:`RunNotFoundError` for an unknown
        run."""

    @abc.abstractmethod
    async def send_event(self, event: NewEvent, *, driver: NewJob, now: datetime) -> bool:
        """Store an event for the run ``event.run_id`` and wake the run if it waits for it,
        in one transaction; return whether it was woken.

        Raises :class:`RunNotFoundError` when the run does not exist, or belongs to another
        tenant than ``event.tenant`` (a tenant never reaches another's runs). The run is
        woken when it is ``waiting`` with ``waiting_for == event.name``: it becomes
        ``running`` and its wake-up job is made due: the job with the unique key
        ``wf:<run id>:<generation>`` in the run's tenant (the wait's timeout timer; drivers
        carry their run's tenant), if pending, gets ``run_at = now``; if there is none,
        ``driver`` is inserted with that unique key.
        """

    @abc.abstractmethod
    async def take_event(
        self, run_id: str, name: str, *, seq: int, now: datetime
    ) -> WorkflowEvent | None:
        """Consume the oldest unconsumed event ``name`` of the run, marking it consumed by
        ``seq``, atomically (two takers never get the same event). An event already consumed
        by this ``seq`` is returned again (a replay). ``None`` when there is none."""
