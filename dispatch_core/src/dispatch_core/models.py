"""Value types shared by the engine, the worker and every store."""

from __future__ import annotations

import enum
import json
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
    "Truncated",
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


#: A listing's ``preview``: ``None`` or a number of bytes, at least 0.
_PREVIEW = attrs.validators.optional(
    attrs.validators.and_(attrs.validators.instance_of(int), attrs.validators.ge(0))
)

# Compact JSON, as every store keeps bodies (PostgreSQL's jsonb aside: see Truncated).
_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@attrs.frozen(kw_only=True)
class Truncated:
    """A payload, result, input or output left out of a listing: the first characters of its
    compact JSON text, and the length of that whole text.

    A listing asked for previews (``JobFilter(preview=N)``, ``DLQFilter``, ``RunFilter``)
    returns one in place of each body whose compact JSON text is longer than ``N`` bytes of
    UTF-8; shorter bodies, and every detail read (``get_job``, ``get_dlq``, ``get_run``), come
    back whole. Lengths are in bytes of UTF-8 (for ASCII text, the number of characters): the
    unit of the admin API's body limit, and one Redis knows without reading a body through
    (``HSTRLEN``), which keeps its listing scripts short. On PostgreSQL the text is the
    server's rendering of the ``jsonb`` value (keys in its order, a space after each ``:`` and
    ``,``).

    Attributes:
        preview: The start of the text: as many whole characters as fit in ``N`` bytes.
        size: The length of the whole text, in bytes of UTF-8 (more than ``N``).
    """

    preview: str
    size: int

    @staticmethod
    def cut(text: str, limit: int) -> str:
        """The longest start of ``text`` that takes at most ``limit`` bytes of UTF-8 and ends
        on a whole character. For a store that reads a few characters more than it needs
        (``substr`` counts characters): they are dropped here."""
        head = text[:limit]  # limit characters take limit bytes or more
        if head.isascii():
            return head
        # the one character split by the cut is incomplete: "ignore" drops it, and only it
        # (surrogatepass: a listing never fails on a lone surrogate, which no store keeps)
        return head.encode("utf-8", "surrogatepass")[:limit].decode("utf-8", "ignore")

    @classmethod
    def of(cls, value: JSON, limit: int | None) -> JSON:
        """``value`` itself, or a :class:`Truncated` in its place when its compact JSON text
        takes more than ``limit`` bytes of UTF-8 (``None``: never). For stores that hold
        bodies as Python values; ``None`` (no result, no output) always comes back as is."""
        if limit is None or value is None:
            return value
        text = _compact(value)
        if len(text) <= limit // 4:  # four bytes per character at most: it fits
            return value
        size = len(text.encode("utf-8", "surrogatepass"))
        if size <= limit:
            return value
        return cls(preview=cls.cut(text, limit), size=size)


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
        preview: With a number N, a payload or result whose compact JSON text is longer than
            N bytes of UTF-8 comes back as a :class:`Truncated` (its first N bytes' worth of
            characters and its size); shorter ones come back whole. ``None`` (the default)
            returns them whole. Listings that show many jobs ask for previews, so that big
            bodies stay in the store; :meth:`Store.get_job` returns one job whole.
    """

    state: JobState | None = None
    queue: str | None = None
    name: str | None = None
    tenant: str | None = None
    limit: int = 100
    offset: int = 0
    after: str | None = None
    order: SortOrder = SortOrder.DESC
    preview: int | None = attrs.field(default=None, validator=_PREVIEW)


@attrs.frozen(kw_only=True)
class DLQFilter:
    """Which entries :meth:`Store.list_dlq` returns; ``None`` fields do not filter.

    Entries are ordered by id, which is the order they failed in: oldest first by default.
    ``after`` is a keyset cursor as in :class:`JobFilter`.

    Attributes:
        replayed: ``False``: only entries never replayed; ``True``: only replayed ones (they
            stay in the queue, stamped); ``None``: both.
        preview: With a number N, a payload whose compact JSON text is longer than N bytes
            of UTF-8 comes back as a :class:`Truncated`, as in :class:`JobFilter`; ``None``
            (the default) returns payloads whole.
    """

    queue: str | None = None
    name: str | None = None
    tenant: str | None = None
    replayed: bool | None = None
    limit: int = 100
    offset: int = 0
    after: str | None = None
    order: SortOrder = SortOrder.ASC
    preview: int | None = attrs.field(default=None, validator=_PREVIEW)


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
