"""The in-memory store: for unit tests, users' tests and the benchmark baseline.

Everything lives in this process and is lost with it. One lock guards the state, so the store
is safe to share between an event loop and producer threads.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from dispatch_core._ids import new_id, new_token
from dispatch_core.errors import DLQEntryNotFoundError, InvalidTransitionError, JobNotFoundError
from dispatch_core.models import DLQEntry, Job, JobFilter, NewJob, Outcome, OutcomeKind, utcnow
from dispatch_core.states import RUNNABLE_STATES, JobState, check_transition
from dispatch_core.store import StopListening, Store, SyncStore

__all__ = ["MemoryStore"]

# Ready heap entries: (-priority, run_at, id), one heap per queue. Scheduled: (run_at, id).
_Ready = tuple[int, datetime, str]

_PENDING, _RUNNING, _RETRYING = JobState.PENDING, JobState.RUNNING, JobState.RETRYING
_COMPLETED, _FAILED, _CANCELLED = JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED


class _Row:
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
        self.state = _PENDING
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


class MemoryStore(Store):
    """A complete store held in memory. URL: ``memory://``."""

    scheme = "memory"

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.Lock()
        self._jobs: dict[str, _Row] = {}
        self._unique: dict[str, str] = {}
        self._ready: dict[str, list[_Ready]] = {}
        self._scheduled: list[tuple[datetime, str]] = []
        self._running: set[str] = set()
        self._dlq: dict[str, DLQEntry] = {}
        self._listeners: list[Callable[[], None]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def migrate(self) -> list[str]:
        return []

    async def listen(self, wake: Callable[[], None]) -> StopListening:
        with self._lock:
            self._listeners.append(wake)

        async def stop() -> None:
            with self._lock:
                if wake in self._listeners:
                    self._listeners.remove(wake)

        return stop

    def sync(self) -> SyncStore:
        return _MemorySync(self)

    def _notify(self) -> None:
        for wake in list(self._listeners):
            wake()

    # -- internals (callers hold the lock) ------------------------------------------------------

    def _make_runnable(self, row: _Row, now: datetime) -> None:
        if row.run_at <= now:
            heapq.heappush(
                self._ready.setdefault(row.queue, []), (-row.priority, row.run_at, row.id)
            )
        else:
            heapq.heappush(self._scheduled, (row.run_at, row.id))

    def _promote_due(self, now: datetime) -> None:
        sched = self._scheduled
        while sched and sched[0][0] <= now:
            _, job_id = heapq.heappop(sched)
            row = self._jobs.get(job_id)
            if row is not None and row.state in RUNNABLE_STATES and row.run_at <= now:
                heapq.heappush(
                    self._ready.setdefault(row.queue, []), (-row.priority, row.run_at, row.id)
                )

    def _get(self, job_id: str) -> _Row:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFoundError(job_id) from None

    def _enqueue_locked(self, jobs: Sequence[NewJob]) -> list[Job]:
        out: list[Job] = []
        now = utcnow()
        for new in jobs:
            if new.unique_key is not None and new.unique_key in self._unique:
                out.append(self._jobs[self._unique[new.unique_key]].to_job())
                continue
            row = _Row(new)
            self._jobs[row.id] = row
            if row.unique_key is not None:
                self._unique[row.unique_key] = row.id
            self._make_runnable(row, now)
            out.append(row.to_job())
        return out

    def _cancel_locked(self, job_id: str, now: datetime) -> Job:
        row = self._get(job_id)
        check_transition(job_id, row.state, _CANCELLED)
        self._running.discard(job_id)
        row.state = _CANCELLED
        row.updated_at = row.finished_at = now
        row.free_lease()
        return row.to_job()

    def _dead_letter(self, row: _Row, error: str, now: datetime) -> None:
        entry = DLQEntry(
            id=new_id("dlq"),
            job_id=row.id,
            name=row.name,
            queue=row.queue,
            payload=row.payload,
            error=error,
            attempts=row.attempt,
            max_attempts=row.max_attempts,
            priority=row.priority,
            timeout=row.timeout,
            tenant=row.tenant,
            headers=dict(row.headers),
            failed_at=now,
        )
        self._dlq[entry.id] = entry

    # -- producing ---------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        with self._lock:
            out = self._enqueue_locked(jobs)
        self._notify()
        return out

    # -- hot path -------------------------------------------------------------------------------

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
        claimed: list[Job] = []
        lease_until = now + timedelta(seconds=lease_seconds)
        jobs = self._jobs
        with self._lock:
            self._promote_due(now)
            heaps = (
                [h for h in self._ready.values() if h]
                if queues is None
                else [h for q in queues if (h := self._ready.get(q))]
            )
            skipped: list[tuple[list[_Ready], _Ready]] = []
            while len(claimed) < limit and heaps:
                best = min(heaps, key=lambda h: h[0]) if len(heaps) > 1 else heaps[0]
                entry = heapq.heappop(best)
                if not best:
                    heaps.remove(best)
                row = jobs.get(entry[2])
                if row is None or row.state not in RUNNABLE_STATES or row.run_at != entry[1]:
                    continue  # stale entry: cancelled, claimed or rescheduled since
                if row.run_at > now:  # made due by a clock ahead of this claim's
                    heapq.heappush(self._scheduled, (row.run_at, row.id))
                    continue
                if names is not None and row.name not in names:
                    skipped.append((best, entry))
                    continue
                row.state = _RUNNING
                row.attempt += 1
                row.worker_id = worker_id
                row.attempt_token = new_token()
                row.started_at = row.updated_at = now
                row.lease_expires_at = lease_until
                self._running.add(row.id)
                claimed.append(row.to_job())
            for heap, entry in skipped:
                heapq.heappush(heap, entry)
        return claimed

    async def heartbeat(
        self, *, worker_id: str, leases: Mapping[str, str], lease_seconds: float, now: datetime
    ) -> set[str]:
        lost: set[str] = set()
        until = now + timedelta(seconds=lease_seconds)
        with self._lock:
            for job_id, token in leases.items():
                row = self._jobs.get(job_id)
                if row is None or row.state is not _RUNNING or row.attempt_token != token:
                    lost.add(job_id)
                    continue
                row.lease_expires_at = until
                row.updated_at = now
        return lost

    async def finish(self, outcomes: Sequence[Outcome], *, now: datetime) -> list[bool]:
        written: list[bool] = []
        wake = False
        jobs = self._jobs
        with self._lock:
            for o in outcomes:
                row = jobs.get(o.job_id)
                if row is None or row.state is not _RUNNING or row.attempt_token != o.attempt_token:
                    written.append(False)
                    continue
                self._running.discard(row.id)
                row.free_lease()
                row.updated_at = now
                kind = o.kind
                if kind is OutcomeKind.COMPLETED:
                    row.state = _COMPLETED
                    row.result = o.result
                    row.finished_at = now
                elif kind is OutcomeKind.RETRY:
                    row.state = _RETRYING
                    row.last_error = o.error
                    row.run_at = o.run_at or now
                    self._make_runnable(row, now)
                    wake = True
                elif kind is OutcomeKind.FAIL:
                    row.state = _FAILED
                    row.last_error = o.error
                    row.finished_at = now
                    self._dead_letter(row, o.error or "", now)
                else:  # RELEASE: the attempt is given back
                    row.state = _PENDING
                    row.attempt = max(row.attempt - 1, 0)
                    row.run_at = min(row.run_at, now)
                    self._make_runnable(row, now)
                    wake = True
                written.append(True)
        if wake:
            self._notify()
        return written

    async def rescue_expired(self, *, now: datetime) -> list[Job]:
        rescued: list[Job] = []
        with self._lock:
            for job_id in list(self._running):
                row = self._jobs[job_id]
                if row.lease_expires_at is None or row.lease_expires_at >= now:
                    continue
                self._running.discard(job_id)
                error = f"lease expired: worker {row.worker_id} stopped heartbeating"
                row.last_error = error
                row.updated_at = now
                row.free_lease()
                if row.attempt >= row.max_attempts:
                    row.state = _FAILED
                    row.finished_at = now
                    self._dead_letter(row, error, now)
                else:
                    row.state = _RETRYING
                    row.run_at = now
                    self._make_runnable(row, now)
                rescued.append(row.to_job())
        if rescued:
            self._notify()
        return rescued

    async def next_run_at(
        self, *, queues: Collection[str] | None, names: Collection[str] | None
    ) -> datetime | None:
        best: datetime | None = None
        with self._lock:
            for row in self._jobs.values():
                if (
                    row.state in RUNNABLE_STATES
                    and (queues is None or row.queue in queues)
                    and (names is None or row.name in names)
                    and (best is None or row.run_at < best)
                ):
                    best = row.run_at
        return best

    # -- inspection and control ----------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job:
        with self._lock:
            return self._get(job_id).to_job()

    async def list_jobs(self, filter: JobFilter) -> list[Job]:
        with self._lock:
            rows = [
                r
                for r in self._jobs.values()
                if (filter.state is None or r.state is filter.state)
                and (filter.queue is None or r.queue == filter.queue)
                and (filter.name is None or r.name == filter.name)
                and (filter.tenant is None or r.tenant == filter.tenant)
            ]
            rows.sort(key=lambda r: r.id, reverse=True)
            return [r.to_job() for r in rows[filter.offset : filter.offset + filter.limit]]

    async def count_jobs(self, *, queue: str | None = None) -> dict[JobState, int]:
        counts: dict[JobState, int] = {}
        with self._lock:
            for r in self._jobs.values():
                if queue is None or r.queue == queue:
                    counts[r.state] = counts.get(r.state, 0) + 1
        return counts

    async def cancel(self, job_id: str, *, now: datetime) -> Job:
        with self._lock:
            return self._cancel_locked(job_id, now)

    async def retry(self, job_id: str, *, now: datetime) -> Job:
        with self._lock:
            row = self._get(job_id)
            if row.state is _RUNNING:
                # RUNNING -> PENDING is the shutdown release, never a manual retry.
                raise InvalidTransitionError(job_id, "running", "pending", "the job is running")
            check_transition(job_id, row.state, _PENDING)
            row.state = _PENDING
            row.attempt = 0
            row.run_at = row.updated_at = now
            row.finished_at = None
            row.last_error = None
            self._make_runnable(row, now)
            job = row.to_job()
        self._notify()
        return job

    # -- dead-letter queue -------------------------------------------------------------------

    async def list_dlq(
        self, *, queue: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[DLQEntry]:
        with self._lock:
            entries = [e for e in self._dlq.values() if queue is None or e.queue == queue]
        entries.sort(key=lambda e: (e.failed_at, e.id))
        return entries[offset : offset + limit]

    async def get_dlq(self, entry_id: str) -> DLQEntry:
        with self._lock:
            try:
                return self._dlq[entry_id]
            except KeyError:
                raise DLQEntryNotFoundError(entry_id) from None

    async def replay_dlq(self, entry_id: str, *, new_job_id: str, now: datetime) -> Job:
        with self._lock:
            try:
                entry = self._dlq[entry_id]
            except KeyError:
                raise DLQEntryNotFoundError(entry_id) from None
            (job,) = self._enqueue_locked([entry.replay_as(job_id=new_job_id, now=now)])
            self._dlq[entry_id] = attrs.evolve(entry, replayed_at=now, replay_job_id=job.id)
        self._notify()
        return job

    async def purge_dlq(self, *, before: datetime) -> int:
        with self._lock:
            doomed = [k for k, e in self._dlq.items() if e.failed_at < before]
            for k in doomed:
                del self._dlq[k]
        return len(doomed)


class _MemorySync:
    """The blocking producer API of :class:`MemoryStore` (it never blocks for long)."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        with self._store._lock:
            out = self._store._enqueue_locked(jobs)
        self._store._notify()
        return out

    def get_job(self, job_id: str) -> Job:
        with self._store._lock:
            return self._store._get(job_id).to_job()

    def cancel(self, job_id: str) -> Job:
        with self._store._lock:
            return self._store._cancel_locked(job_id, utcnow())

    def close(self) -> None:
        return None
