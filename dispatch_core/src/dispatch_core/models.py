"""Value types shared by the engine, the worker and every store."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import attrs

from dispatch_core.states import JobState

__all__ = [
    "JSON",
    "Job",
    "NewJob",
    "Outcome",
    "OutcomeKind",
    "DLQEntry",
    "JobFilter",
    "DLQFilter",
    "SortOrder",
    "ThroughputBucket",
    "RunnableCount",
    "utcnow",
]

#: A JSON value: what payloads, results and headers hold once serialised.
JSON = Any


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


@attrs.frozen(kw_only=True)
class NewJob:
    """A job to be written by :meth:`Store.enqueue`; the engine builds it, the store persists it."""

    #: TypeID ``job_…``, chosen by the engine so bulk inserts need no round trip.
    id: str
    name: str
    queue: str
    #: The payload, already validated and unstructured to JSON types.
    payload: JSON
    priority: int
    max_attempts: int
    #: Seconds the handler may run; ``None`` means no limit.
    timeout: float | None
    run_at: datetime
    created_at: datetime
    #: Idempotency key, unique within the job's tenant (jobs without a tenant share one
    #: scope): a second job with the same key and tenant is not written.
    unique_key: str | None = None
    tenant: str | None = None
    headers: dict[str, str] = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class Job:
    """A persisted job, as a store returns it. Immutable: transitions return new objects."""

    id: str
    name: str
    queue: str
    payload: JSON
    state: JobState
    priority: int
    #: Attempts started so far (a rescued attempt counts; a released one does not).
    attempt: int
    max_attempts: int
    timeout: float | None
    run_at: datetime
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_error: str | None = None
    unique_key: str | None = None
    tenant: str | None = None
    headers: dict[str, str] = attrs.Factory(dict)
    result: JSON = None
    #: The lease, set while the job is running.
    worker_id: str | None = None
    attempt_token: str | None = None
    lease_expires_at: datetime | None = None

    @property
    def max_retries(self) -> int:
        """Retries allowed after the first attempt."""
        return self.max_attempts - 1


class OutcomeKind(enum.StrEnum):
    """What a worker reports for a finished attempt."""

    COMPLETED = "completed"
    RETRY = "retry"
    FAIL = "fail"  # terminal: the store dead-letters the job in the same write
    RELEASE = "release"  # shutdown: back to pending, the attempt is not consumed


@attrs.frozen(kw_only=True)
class Outcome:
    """The end of one attempt, written by :meth:`Store.finish` only if the token still holds."""

    job_id: str
    attempt_token: str
    kind: OutcomeKind
    error: str | None = None
    result: JSON = None
    #: For ``RETRY``: when the next attempt may run.
    run_at: datetime | None = None


@attrs.frozen(kw_only=True)
class DLQEntry:
    """A dead-lettered job: a copy of what failed, kept until replayed or purged."""

    id: str
    job_id: str
    name: str
    queue: str
    payload: JSON
    error: str
    attempts: int
    max_attempts: int
    priority: int
    timeout: float | None
    tenant: str | None
    headers: dict[str, str]
    failed_at: datetime
    replayed_at: datetime | None = None
    #: The job created by the last replay.
    replay_job_id: str | None = None

    def replay_as(self, *, job_id: str, now: datetime) -> NewJob:
        """The fresh job a replay enqueues: same work, attempts reset, runnable ``now``."""
        return NewJob(
            id=job_id,
            name=self.name,
            queue=self.queue,
            payload=self.payload,
            priority=self.priority,
            max_attempts=self.max_attempts,
            timeout=self.timeout,
            run_at=now,
            created_at=now,
            tenant=self.tenant,
            headers=dict(self.headers),
        )


class SortOrder(enum.StrEnum):
    """The order of a listing, by id. TypeIDs are time-ordered, so id order is creation order."""

    ASC = "asc"
    DESC = "desc"


@attrs.frozen(kw_only=True)
class JobFilter:
    """Which jobs :meth:`Store.list_jobs` returns; ``None`` fields do not filter.

    Attributes:
        after: A keyset cursor: only jobs whose id comes strictly after this one in ``order``
            (the last id of the previous page). Stable while jobs are added, unlike ``offset``.
        order: By id, newest first (``DESC``, the default) or oldest first.
    """

    state: JobState | None = None
    queue: str | None = None
    name: str | None = None
    tenant: str | None = None
    limit: int = 100
    offset: int = 0
    after: str | None = None
    order: SortOrder = SortOrder.DESC


@attrs.frozen(kw_only=True)
class DLQFilter:
    """Which entries :meth:`Store.list_dlq` returns; ``None`` fields do not filter.

    Entries are ordered by id, which is the order they failed in: oldest first by default.
    ``after`` is a keyset cursor as in :class:`JobFilter`.

    Attributes:
        replayed: ``False``: only entries never replayed; ``True``: only replayed ones (they
            stay in the queue, stamped); ``None``: both.
    """

    queue: str | None = None
    name: str | None = None
    tenant: str | None = None
    replayed: bool | None = None
    limit: int = 100
    offset: int = 0
    after: str | None = None
    order: SortOrder = SortOrder.ASC


@attrs.frozen(kw_only=True)
class ThroughputBucket:
    """Jobs that finished in one time bucket, for throughput and failure-rate charts.

    Attributes:
        start: The bucket's start (UTC), a multiple of the bucket size since the Unix epoch.
        completed: Jobs that completed with ``finished_at`` in the bucket.
        failed: Jobs that failed for good (dead-lettered) with ``finished_at`` in the bucket.
    """

    start: datetime
    completed: int = 0
    failed: int = 0


@attrs.frozen(kw_only=True)
class RunnableCount:
    """How many runnable jobs of one name wait in one queue.

    Runnable means state ``pending`` or ``retrying`` with ``run_at`` due. The engine reports
    the rows no live worker can run (:meth:`~dispatch_core.Engine.aunhandled_jobs`): jobs
    enqueued under a name that no worker registered wait forever otherwise.

    Attributes:
        queue: The queue the jobs are in.
        name: The job name they were enqueued under.
        count: How many of them are runnable now.
    """

    queue: str
    name: str
    count: int
