"""The memory store's state: the rows, the one lock that guards them, and the internals that
more than one section of the store uses (their callers hold the lock).

Each section of the store (:mod:`.jobs`, :mod:`.claim`, :mod:`.dlq`, :mod:`.cluster`,
:mod:`.workflows`) is a mixin over :class:`MemoryState`; none of them calls another.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from dispatch_core.cluster import WorkerInfo
from dispatch_core.cron import CronEntry
from dispatch_core.errors import JobIdTakenError, JobNotFoundError
from dispatch_core.models import DLQEntry, Job, NewJob, SortOrder, utcnow
from dispatch_core.queues import QueueConfig, TokenBucket
from dispatch_core.states import JobState
from dispatch_core.workflows.models import StepRecord, WorkflowEvent, WorkflowRun

__all__ = [
    "MemoryState",
    "JobRow",
    "QueueRow",
    "Ready",
    "page",
    "PENDING",
    "RUNNING",
    "RETRYING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
]

#: Ready heap entries: (-priority, run_at, id), one heap per queue. Scheduled: (run_at, id).
Ready = tuple[int, datetime, str]

PENDING, RUNNING, RETRYING = JobState.PENDING, JobState.RUNNING, JobState.RETRYING
COMPLETED, FAILED, CANCELLED = JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED


class JobRow:
    """A job as the memory store keeps it: mutable, so a transition costs no copy."""

    __slots__ = (
        "attempt",
        "attempt_token",
        "created_at",
        "finished_at",
        "headers",
        "id",
        "last_error",
        "lease_expires_at",
        "max_attempts",
        "name",
        "payload",
        "priority",
        "queue",
        "result",
        "run_at",
        "started_at",
        "state",
        "tenant",
        "timeout",
        "unique_key",
        "updated_at",
        "worker_id",
    )

    def __init__(self, new: NewJob) -> None:
        self.id = new.id
        self.name = new.name
        self.queue = new.queue
        self.payload = new.payload
        self.state = PENDING
        self.priority = new.priority
        self.attempt = 0
        self.max_attempts = new.max_attempts
        self.timeout = new.timeout
        self.run_at = new.run_at
        self.created_at = new.created_at
        self.updated_at = new.created_at
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.last_error: str | None = None
        self.unique_key = new.unique_key
        self.tenant = new.tenant
        self.headers = dict(new.headers)
        self.result: Any = None
        self.worker_id: str | None = None
        self.attempt_token: str | None = None
        self.lease_expires_at: datetime | None = None

    def to_job(self) -> Job:
        return Job(
            id=self.id,
            name=self.name,
            queue=self.queue,
            payload=self.payload,
            state=self.state,
            priority=self.priority,
            attempt=self.attempt,
            max_attempts=self.max_attempts,
            timeout=self.timeout,
            run_at=self.run_at,
            created_at=self.created_at,
            updated_at=self.updated_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            last_error=self.last_error,
            unique_key=self.unique_key,
            tenant=self.tenant,
            headers=dict(self.headers) if self.headers else {},
            result=self.result,
            worker_id=self.worker_id,
            attempt_token=self.attempt_token,
            lease_expires_at=self.lease_expires_at,
        )

    def free_lease(self) -> None:
        self.worker_id = None
        self.attempt_token = None
        self.lease_expires_at = None


class QueueRow:
    """A queue's row: its limits, its paused flag and its token buckets (one per tenant with
    ``per_tenant``, else one under the key ``None``)."""

    __slots__ = ("buckets", "config", "paused")

    def __init__(self) -> None:
        self.config: QueueConfig | None = None
        self.paused = False
        self.buckets: dict[str | None, TokenBucket] = {}

    @property
    def restricts(self) -> bool:
        return self.paused or (self.config is not None and self.config.limited)


class MemoryState:
    """Everything the memory store holds, behind one lock.

    Methods with the suffix ``_locked`` and the other private helpers here expect the caller
    to hold ``_lock``; ``_notify`` is called after releasing it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, JobRow] = {}
        # (tenant, unique key) -> job id: keys are unique within a tenant.
        self._unique: dict[tuple[str | None, str], str] = {}
        self._ready: dict[str, list[Ready]] = {}
        self._scheduled: list[tuple[datetime, str]] = []
        self._running: set[str] = set()
        self._dlq: dict[str, DLQEntry] = {}
        self._listeners: list[Callable[[], None]] = []
        self._workers: dict[str, WorkerInfo] = {}
        self._leader: tuple[str, datetime] | None = None  # (worker id, lease expiry)
        self._cron: dict[str, CronEntry] = {}
        self._queues: dict[str, QueueRow] = {}
        # The rows that are paused or limited: while empty, claim skips every queue check.
        self._restricted: dict[str, QueueRow] = {}
        self._runs: dict[str, WorkflowRun] = {}
        self._steps: dict[str, dict[int, StepRecord]] = {}  # run id -> seq -> record
        self._events: dict[str, list[WorkflowEvent]] = {}  # run id -> events, as sent

    def _notify(self) -> None:
        for wake in list(self._listeners):
            wake()

    def _make_runnable(self, row: JobRow, now: datetime) -> None:
        if row.run_at <= now:
            heapq.heappush(
                self._ready.setdefault(row.queue, []), (-row.priority, row.run_at, row.id)
            )
        else:
            heapq.heappush(self._scheduled, (row.run_at, row.id))

    def _get(self, job_id: str) -> JobRow:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFoundError(job_id) from None

    def _enqueue_locked(self, jobs: Sequence[NewJob]) -> list[Job]:
        self._check_ids(jobs)
        out: list[Job] = []
        now = utcnow()
        unique = self._unique
        for new in jobs:
            if new.unique_key is not None:
                holder = unique.get((new.tenant, new.unique_key))
                if holder is not None:
                    out.append(self._jobs[holder].to_job())
                    continue
            row = JobRow(new)
            self._jobs[row.id] = row
            if row.unique_key is not None:
                unique[row.tenant, row.unique_key] = row.id
            self._make_runnable(row, now)
            out.append(row.to_job())
        return out

    def _check_ids(self, jobs: Sequence[NewJob]) -> None:
        """Refuse the call before writing anything when a job that its key does not dedupe
        would take an id in use (a chosen id another tenant's job has)."""
        stored = self._jobs
        if len(jobs) == 1:
            new = jobs[0]
            if new.id in stored and (
                new.unique_key is None or (new.tenant, new.unique_key) not in self._unique
            ):
                raise JobIdTakenError(new.id)
            return
        ids = {new.id for new in jobs}
        if len(ids) == len(jobs) and stored.keys().isdisjoint(ids):
            return  # the usual case: fresh ids, nothing to check job by job
        written: set[str] = set()
        keys: set[tuple[str | None, str]] = set()
        for new in jobs:
            if new.unique_key is not None:
                key = (new.tenant, new.unique_key)
                if key in self._unique or key in keys:
                    continue  # deduplicated: nothing written
                keys.add(key)
            if new.id in self._jobs or new.id in written:
                raise JobIdTakenError(new.id)
            written.add(new.id)


_T = TypeVar("_T")


def page(
    items: list[_T],
    key: Callable[[_T], str],
    order: SortOrder,
    after: str | None,
    offset: int,
    limit: int,
) -> list[_T]:
    """One page of ``items``: sorted by ``key`` in ``order``, past the cursor ``after``."""
    desc = order is SortOrder.DESC
    items = sorted(items, key=key, reverse=desc)
    if after is not None:
        items = [x for x in items if (key(x) < after if desc else key(x) > after)]
    return items[offset : offset + limit]
