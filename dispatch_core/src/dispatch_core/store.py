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

from dispatch_core.models import DLQEntry, Job, JobFilter, NewJob, Outcome
from dispatch_core.states import JobState

__all__ = ["Store", "SyncStore", "StopListening"]

#: Returned by :meth:`Store.listen`; awaiting it stops the listener.
StopListening = Callable[[], Awaitable[None]]


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
    """

    #: URL scheme(s) this store answers to, e.g. ``"sqlite"``.
    scheme: ClassVar[str] = ""

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

        A job whose ``unique_key`` is already taken is not written; the existing job is
        returned in its place.
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
        """

    @abc.abstractmethod
    async def heartbeat(
        self, *, worker_id: str, leases: Mapping[str, str], lease_seconds: float, now: datetime
    ) -> set[str]:
        """Extend the leases of running jobs (``{job_id: attempt_token}``).

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
    async def rescue_expired(self, *, now: datetime) -> list[Job]:
        """Recover running jobs whose lease expired before ``now``; return them as rescued.

        The lost attempt counts: a job with attempts left becomes ``retrying`` (runnable at
        once), one without becomes ``failed`` and is dead-lettered.
        """

    @abc.abstractmethod
    async def next_run_at(
        self, *, queues: Collection[str] | None, names: Collection[str] | None
    ) -> datetime | None:
        """The earliest ``run_at`` among runnable-state jobs that match, or ``None``."""

    # -- inspection and control ----------------------------------------------------------------

    @abc.abstractmethod
    async def get_job(self, job_id: str) -> Job:
        """Return the job or raise :class:`JobNotFoundError`."""

    @abc.abstractmethod
    async def list_jobs(self, filter: JobFilter) -> list[Job]:
        """Jobs matching ``filter``, newest first (by id)."""

    @abc.abstractmethod
    async def count_jobs(self, *, queue: str | None = None) -> dict[JobState, int]:
        """The number of jobs in each state (states with none may be omitted)."""

    @abc.abstractmethod
    async def cancel(self, job_id: str, *, now: datetime) -> Job:
        """Cancel a pending, retrying or running job (a running one loses its lease)."""

    @abc.abstractmethod
    async def retry(self, job_id: str, *, now: datetime) -> Job:
        """Send a failed or cancelled job back to ``pending`` with its attempts reset."""

    # -- the dead-letter queue -------------------------------------------------------------------

    @abc.abstractmethod
    async def list_dlq(
        self, *, queue: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[DLQEntry]:
        """Dead-letter entries, oldest failure first."""

    @abc.abstractmethod
    async def get_dlq(self, entry_id: str) -> DLQEntry:
        """Return the entry or raise :class:`DLQEntryNotFoundError`."""

    @abc.abstractmethod
    async def replay_dlq(self, entry_id: str, *, new_job_id: str, now: datetime) -> Job:
        """Enqueue a fresh copy of the dead-lettered job (id ``new_job_id``, attempts reset) and
        stamp the entry's ``replayed_at`` / ``replay_job_id``, in one transaction."""

    @abc.abstractmethod
    async def purge_dlq(self, *, before: datetime) -> int:
        """Delete entries that failed before ``before``; return how many."""
