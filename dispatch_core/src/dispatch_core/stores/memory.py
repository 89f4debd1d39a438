"""The in-memory store: for unit tests, users' tests and the benchmark baseline.

Everything lives in this process and is lost with it. One lock guards the state, so the store
is safe to share between an event loop and producer threads.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import attrs

from dispatch_core._ids import new_id, new_token
from dispatch_core.cluster import WorkerInfo, WorkerState
from dispatch_core.cron import CronEntry
from dispatch_core.errors import (
    CronNotFoundError,
    DLQEntryNotFoundError,
    InvalidTransitionError,
    JobIdTakenError,
    JobNotFoundError,
    RunNotFoundError,
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
from dispatch_core.queues import QueueConfig, QueueStats, TokenBucket
from dispatch_core.states import RUNNABLE_STATES, JobState, check_transition
from dispatch_core.store import PruneCutoffs, StopListening, Store, SyncStore
from dispatch_core.workflows.models import (
    TERMINAL_RUN_STATES,
    NewEvent,
    NewRun,
    RunFilter,
    RunState,
    StepRecord,
    StepState,
    WorkflowEvent,
    WorkflowRun,
)

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


class _QueueRow:
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


class _Gate:
    """One claim's view of a limited queue: running counts and buckets per allowance key."""

    __slots__ = ("config", "now", "queue", "running")

    def __init__(self, queue: _QueueRow, config: QueueConfig, now: datetime) -> None:
        self.queue = queue
        self.config = config
        self.now = now
        self.running: dict[str | None, int] = {}

    def key(self, row: _Row) -> str | None:
        return row.tenant if self.config.per_tenant else None

    def _bucket(self, key: str | None) -> TokenBucket:
        buckets = self.queue.buckets
        old = buckets.get(key)
        bucket = (
            TokenBucket.full(self.config, self.now)
            if old is None
            else old.refill(self.config, self.now)
        )
        buckets[key] = bucket
        return bucket

    def admits(self, key: str | None) -> bool:
        cap = self.config.concurrency
        if cap is not None and self.running.get(key, 0) >= cap:
            return False
        return self.config.rate is None or self._bucket(key).available() >= 1

    def take(self, key: str | None) -> None:
        self.running[key] = self.running.get(key, 0) + 1
        if self.config.rate is not None:
            buckets = self.queue.buckets
            buckets[key] = buckets[key].take(1)


class MemoryStore(Store):
    """A complete store held in memory. URL: ``memory://``."""

    scheme = "memory"
    #: Every call holds the store's lock, and wake-ups are thread-safe.
    thread_safe = True

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.Lock()
        self._jobs: dict[str, _Row] = {}
        # (tenant, unique key) -> job id: keys are unique within a tenant.
        self._unique: dict[tuple[str | None, str], str] = {}
        self._ready: dict[str, list[_Ready]] = {}
        self._scheduled: list[tuple[datetime, str]] = []
        self._running: set[str] = set()
        self._dlq: dict[str, DLQEntry] = {}
        self._listeners: list[Callable[[], None]] = []
        self._workers: dict[str, WorkerInfo] = {}
        self._leader: tuple[str, datetime] | None = None  # (worker id, lease expiry)
        self._cron: dict[str, CronEntry] = {}
        self._queues: dict[str, _QueueRow] = {}
        # The rows that are paused or limited: while empty, claim skips every queue check.
        self._restricted: dict[str, _QueueRow] = {}
        self._runs: dict[str, WorkflowRun] = {}
        self._steps: dict[str, dict[int, StepRecord]] = {}  # run id -> seq -> record
        self._events: dict[str, list[WorkflowEvent]] = {}  # run id -> events, as sent

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
            row = _Row(new)
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
            if self._restricted:
                return self._claim_restricted(worker_id, queues, names, limit, lease_until, now)
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

    def _claim_restricted(
        self,
        worker_id: str,
        queues: Collection[str] | None,
        names: Collection[str] | None,
        limit: int,
        lease_until: datetime,
        now: datetime,
    ) -> list[Job]:
        """The claim when some queue is paused or limited (the caller holds the lock)."""
        claimed: list[Job] = []
        jobs = self._jobs
        restricted = self._restricted
        lanes: list[tuple[list[_Ready], _Gate | None]] = []
        gates: dict[str, _Gate] = {}
        for q in self._ready if queues is None else queues:
            heap = self._ready.get(q)
            if not heap:
                continue
            qrow = restricted.get(q)
            if qrow is None:
                lanes.append((heap, None))
            elif not qrow.paused:
                assert qrow.config is not None  # restricted and not paused: it has limits
                gates[q] = new_gate = _Gate(qrow, qrow.config, now)
                lanes.append((heap, new_gate))
        if any(g.config.concurrency is not None for g in gates.values()):
            # Counted per claim, not kept up to date on every transition: unlimited queues
            # pay nothing, and the running set is small (bounded by the workers' slots).
            for job_id in self._running:
                running = jobs[job_id]
                g = gates.get(running.queue)
                if g is not None:
                    k = g.key(running)
                    g.running[k] = g.running.get(k, 0) + 1
        skipped: list[tuple[list[_Ready], _Ready]] = []
        while len(claimed) < limit and lanes:
            lane = min(lanes, key=lambda ln: ln[0][0]) if len(lanes) > 1 else lanes[0]
            best, gate = lane
            if gate is not None and not gate.config.per_tenant and not gate.admits(None):
                lanes.remove(lane)  # the whole queue is at its limit: leave its jobs be
                continue
            entry = heapq.heappop(best)
            if not best:
                lanes.remove(lane)
            row = jobs.get(entry[2])
            if row is None or row.state not in RUNNABLE_STATES or row.run_at != entry[1]:
                continue  # stale entry
            if row.run_at > now:
                heapq.heappush(self._scheduled, (row.run_at, row.id))
                continue
            if names is not None and row.name not in names:
                skipped.append((best, entry))
                continue
            if gate is not None:
                key = gate.key(row)
                if not gate.admits(key):  # this tenant is at its limit; others may not be
                    skipped.append((best, entry))
                    continue
                gate.take(key)
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
        self,
        *,
        worker_id: str,
        leases: Mapping[str, str],
        lease_seconds: float,
        now: datetime,
        worker: WorkerInfo | None = None,
    ) -> set[str]:
        lost: set[str] = set()
        until = now + timedelta(seconds=lease_seconds)
        with self._lock:
            if worker is not None:
                self._workers[worker.id] = attrs.evolve(
                    worker, last_seen=now, state=WorkerState.RUNNING, leader=False
                )
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

    async def rescue_expired(
        self, *, now: datetime, worker_timeout: float | None = None
    ) -> list[Job]:
        rescued: list[Job] = []
        with self._lock:
            gone: dict[str, WorkerState] = {}
            if worker_timeout is not None:
                silent_since = now - timedelta(seconds=worker_timeout)
                for w in list(self._workers.values()):
                    if w.state is WorkerState.RUNNING and w.last_seen < silent_since:
                        w = attrs.evolve(w, state=WorkerState.DEAD)
                        self._workers[w.id] = w
                    if w.state is not WorkerState.RUNNING:
                        gone[w.id] = w.state
            for job_id in list(self._running):
                row = self._jobs[job_id]
                expired = row.lease_expires_at is not None and row.lease_expires_at < now
                state = gone.get(row.worker_id) if gone and row.worker_id else None
                if state is None and not expired:
                    continue
                error = _rescue_error(row.worker_id, self._workers.get(row.worker_id or ""))
                self._running.discard(job_id)
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
            page = _page(
                rows, lambda r: r.id, filter.order, filter.after, filter.offset, filter.limit
            )
            jobs = [r.to_job() for r in page]
        if filter.preview is None:
            return jobs
        return [_job_preview(job, filter.preview) for job in jobs]

    async def count_jobs(
        self, *, queue: str | None = None, tenant: str | None = None
    ) -> dict[JobState, int]:
        counts: dict[JobState, int] = {}
        with self._lock:
            for r in self._jobs.values():
                if (queue is None or r.queue == queue) and (tenant is None or r.tenant == tenant):
                    counts[r.state] = counts.get(r.state, 0) + 1
        return counts

    async def count_runnable(
        self,
        *,
        now: datetime,
        tenant: str | None = None,
        exclude_names: Collection[str] = (),
    ) -> list[RunnableCount]:
        excluded = frozenset(exclude_names)
        counts: dict[tuple[str, str], int] = {}
        with self._lock:
            for r in self._jobs.values():
                if r.state not in RUNNABLE_STATES or r.run_at > now or r.name in excluded:
                    continue
                if tenant is not None and r.tenant != tenant:
                    continue
                counts[r.queue, r.name] = counts.get((r.queue, r.name), 0) + 1
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
        counts: dict[int, list[int]] = {}
        with self._lock:
            for r in self._jobs.values():
                if r.state not in (JobState.COMPLETED, JobState.FAILED):
                    continue
                if r.finished_at is None or r.finished_at < since:
                    continue
                if (queue is not None and r.queue != queue) or (
                    tenant is not None and r.tenant != tenant
                ):
                    continue
                slot = int(r.finished_at.timestamp()) // bucket_seconds
                pair = counts.setdefault(slot, [0, 0])
                pair[0 if r.state is JobState.COMPLETED else 1] += 1
        return [
            ThroughputBucket(
                start=datetime.fromtimestamp(slot * bucket_seconds, UTC),
                completed=pair[0],
                failed=pair[1],
            )
            for slot, pair in sorted(counts.items())
        ]

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

    async def list_dlq(self, filter: DLQFilter) -> list[DLQEntry]:
        with self._lock:
            entries = [
                e
                for e in self._dlq.values()
                if _dlq_matches(e, filter.queue, filter.tenant, filter.replayed)
            ]
        entries = [e for e in entries if filter.name is None or e.name == filter.name]
        page = _page(
            entries, lambda e: e.id, filter.order, filter.after, filter.offset, filter.limit
        )
        if filter.preview is None:
            return page
        return [_entry_preview(entry, filter.preview) for entry in page]

    async def count_dlq(
        self,
        *,
        queue: str | None = None,
        tenant: str | None = None,
        replayed: bool | None = None,
        before: datetime | None = None,
    ) -> int:
        with self._lock:
            return sum(
                1
                for e in self._dlq.values()
                if _dlq_matches(e, queue, tenant, replayed)
                and (before is None or e.failed_at < before)
            )

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

    async def purge_dlq(
        self,
        *,
        before: datetime,
        queue: str | None = None,
        tenant: str | None = None,
        limit: int | None = None,
    ) -> int:
        with self._lock:
            doomed = sorted(
                k
                for k, e in self._dlq.items()
                if e.failed_at < before and _dlq_matches(e, queue, tenant)
            )[:limit]
            for k in doomed:
                del self._dlq[k]
        return len(doomed)

    # -- the cluster: workers and the leader ------------------------------------------------------

    async def register_worker(self, worker: WorkerInfo) -> None:
        with self._lock:
            self._workers[worker.id] = attrs.evolve(worker, leader=False)

    async def deregister_worker(self, worker_id: str, *, now: datetime) -> None:
        with self._lock:
            w = self._workers.get(worker_id)
            if w is not None:
                self._workers[worker_id] = attrs.evolve(w, state=WorkerState.STOPPED, last_seen=now)
            if self._leader is not None and self._leader[0] == worker_id:
                self._leader = None

    async def list_workers(self) -> list[WorkerInfo]:
        with self._lock:
            leader = self._leader[0] if self._leader is not None else None
            rows = sorted(self._workers.values(), key=lambda w: (w.started_at, w.id))
        return [attrs.evolve(w, leader=True) if w.id == leader else w for w in rows]

    async def acquire_leadership(self, *, worker_id: str, ttl: float, now: datetime) -> bool:
        with self._lock:
            held = self._leader
            if held is None or held[1] <= now or held[0] == worker_id:
                self._leader = (worker_id, now + timedelta(seconds=ttl))
                return True
            return False

    async def release_leadership(self, worker_id: str) -> None:
        with self._lock:
            if self._leader is not None and self._leader[0] == worker_id:
                self._leader = None

    async def get_leader(self, *, now: datetime) -> str | None:
        with self._lock:
            held = self._leader
        return held[0] if held is not None and held[1] > now else None

    # -- cron --------------------------------------------------------------------------------------

    async def upsert_cron(self, entries: Sequence[CronEntry], *, now: datetime) -> None:
        with self._lock:
            for new in entries:
                old = self._cron.get(new.name)
                if old is None:
                    self._cron[new.name] = new
                    continue
                moved = new.expr != old.expr or new.timezone != old.timezone
                self._cron[new.name] = attrs.evolve(
                    old,
                    expr=new.expr,
                    timezone=new.timezone,
                    job_name=new.job_name,
                    payload=new.payload,
                    queue=new.queue,
                    misfire=new.misfire,
                    misfire_grace=new.misfire_grace,
                    next_run_at=new.next_run_at if moved else old.next_run_at,
                    updated_at=now,
                )

    async def list_cron(self) -> list[CronEntry]:
        with self._lock:
            return sorted(self._cron.values(), key=lambda e: e.name)

    async def get_cron(self, name: str) -> CronEntry:
        with self._lock:
            try:
                return self._cron[name]
            except KeyError:
                raise CronNotFoundError(name) from None

    async def set_cron_enabled(
        self, name: str, *, enabled: bool, next_run_at: datetime, now: datetime
    ) -> CronEntry:
        with self._lock:
            try:
                entry = self._cron[name]
            except KeyError:
                raise CronNotFoundError(name) from None
            entry = attrs.evolve(
                entry,
                enabled=enabled,
                next_run_at=next_run_at if enabled else entry.next_run_at,
                updated_at=now,
            )
            self._cron[name] = entry
            return entry

    async def fire_cron(
        self,
        *,
        name: str,
        tick: datetime,
        next_run_at: datetime,
        job: NewJob | None,
        now: datetime,
    ) -> Job | None:
        with self._lock:
            entry = self._cron.get(name)
            if entry is None or not entry.enabled or entry.next_run_at != tick:
                return None
            if job is None:
                self._cron[name] = attrs.evolve(entry, next_run_at=next_run_at)
                return None
            (out,) = self._enqueue_locked([job])
            self._cron[name] = attrs.evolve(
                entry, next_run_at=next_run_at, last_run_at=now, last_job_id=out.id
            )
        self._notify()
        return out

    async def delete_cron(self, name: str) -> bool:
        with self._lock:
            return self._cron.pop(name, None) is not None

    # -- queues ------------------------------------------------------------------------------------

    def _queue_row(self, name: str) -> _QueueRow:
        qrow = self._queues.get(name)
        if qrow is None:
            qrow = self._queues[name] = _QueueRow()
        return qrow

    def _reindex_queue(self, name: str, qrow: _QueueRow) -> None:
        if qrow.restricts:
            self._restricted[name] = qrow
        else:
            self._restricted.pop(name, None)

    async def set_queue(self, config: QueueConfig) -> None:
        with self._lock:
            qrow = self._queue_row(config.name)
            old = qrow.config
            if config.rate is None or (old is not None and old.per_tenant != config.per_tenant):
                qrow.buckets.clear()  # no bucket, or buckets keyed another way
            else:
                size = float(config.bucket_size)
                qrow.buckets = {
                    k: attrs.evolve(b, tokens=min(b.tokens, size)) for k, b in qrow.buckets.items()
                }
            qrow.config = config
            self._reindex_queue(config.name, qrow)
        self._notify()  # looser limits may let waiting jobs run

    async def pause_queue(self, name: str, *, paused: bool) -> None:
        with self._lock:
            qrow = self._queue_row(name)
            qrow.paused = paused
            self._reindex_queue(name, qrow)
        if not paused:
            self._notify()

    async def list_queues(self, *, now: datetime) -> list[QueueStats]:
        since = now - timedelta(minutes=1)
        with self._lock:
            counts: dict[str, list[int]] = {name: [0, 0, 0] for name in self._queues}
            for r in self._jobs.values():
                c = counts.get(r.queue)
                if c is None:
                    c = counts[r.queue] = [0, 0, 0]
                state = r.state
                if state in RUNNABLE_STATES:
                    c[0] += 1
                elif state is _RUNNING:
                    c[1] += 1
                elif (
                    state is _COMPLETED
                    and r.finished_at is not None
                    and since < r.finished_at <= now
                ):
                    c[2] += 1
            rows = {name: (q.config, q.paused) for name, q in self._queues.items()}
        out: list[QueueStats] = []
        for name in sorted(counts):
            config, paused = rows.get(name, (None, False))
            depth, running, done = counts[name]
            out.append(
                QueueStats(
                    name=name,
                    config=config if config is not None and config.limited else None,
                    paused=paused,
                    depth=depth,
                    running=running,
                    completed_last_minute=done,
                )
            )
        return out

    # -- retention ---------------------------------------------------------------------------------

    async def prune(self, cutoffs: PruneCutoffs, *, limit: int = 10_000) -> int:
        job_cutoffs = {
            state: cutoff
            for state, cutoff in (
                (_COMPLETED, cutoffs.completed),
                (_FAILED, cutoffs.failed),
                (_CANCELLED, cutoffs.cancelled),
            )
            if cutoff is not None
        }
        deleted = 0
        with self._lock:
            if job_cutoffs:
                doomed_jobs = [
                    r
                    for r in self._jobs.values()
                    if (cut := job_cutoffs.get(r.state)) is not None
                    and r.finished_at is not None
                    and r.finished_at < cut
                ][:limit]
                for r in doomed_jobs:
                    del self._jobs[r.id]
                    key = (r.tenant, r.unique_key) if r.unique_key is not None else None
                    if key is not None and self._unique.get(key) == r.id:
                        del self._unique[key]
                deleted += len(doomed_jobs)
            if cutoffs.dlq is not None:
                dlq_cut = cutoffs.dlq
                doomed = [k for k, e in self._dlq.items() if e.failed_at < dlq_cut][:limit]
                for k in doomed:
                    del self._dlq[k]
                deleted += len(doomed)
            if cutoffs.workers is not None:
                worker_cut = cutoffs.workers
                doomed = [
                    k
                    for k, w in self._workers.items()
                    if w.state is not WorkerState.RUNNING and w.last_seen < worker_cut
                ][:limit]
                for k in doomed:
                    del self._workers[k]
                deleted += len(doomed)
        return deleted

    # -- durable workflows -------------------------------------------------------------------------

    def _get_run(self, run_id: str) -> WorkflowRun:
        try:
            return self._runs[run_id]
        except KeyError:
            raise RunNotFoundError(run_id) from None

    def _pending_event(self, run_id: str, name: str) -> int | None:
        """The index of the oldest unconsumed event ``name`` of the run, or ``None``."""
        best: int | None = None
        events = self._events.get(run_id, [])
        for i, ev in enumerate(events):
            if ev.name != name or ev.consumed_seq is not None:
                continue
            if best is None or (ev.created_at, ev.id) < (events[best].created_at, events[best].id):
                best = i
        return best

    async def create_run(self, run: NewRun, driver: NewJob) -> WorkflowRun:
        created = WorkflowRun(
            id=run.id,
            name=run.name,
            version=run.version,
            input=run.input,
            state=RunState.RUNNING,
            created_at=run.created_at,
            updated_at=run.created_at,
            tenant=run.tenant,
            parent_run_id=run.parent_run_id,
            correlation_key=run.correlation_key,
        )
        with self._lock:
            existing = self._runs.get(run.id)
            if existing is not None:  # a replay starting a child it already started
                return existing
            self._runs[run.id] = created
            self._enqueue_locked([driver])
        self._notify()
        return created

    async def set_run_version(
        self, run_id: str, version: int, *, generation: int, now: datetime
    ) -> WorkflowRun | None:
        with self._lock:
            run = self._get_run(run_id)
            if run.state in TERMINAL_RUN_STATES or run.generation != generation:
                return None
            moved = attrs.evolve(run, version=version, updated_at=now)
            self._runs[run_id] = moved
            return moved

    async def get_run(self, run_id: str) -> WorkflowRun:
        with self._lock:
            return self._get_run(run_id)

    async def list_runs(self, filter: RunFilter) -> list[WorkflowRun]:
        with self._lock:
            runs = [
                r
                for r in self._runs.values()
                if (filter.state is None or r.state is filter.state)
                and (filter.name is None or r.name == filter.name)
                and (filter.tenant is None or r.tenant == filter.tenant)
                and (filter.parent_run_id is None or r.parent_run_id == filter.parent_run_id)
                and (filter.correlation_key is None or r.correlation_key == filter.correlation_key)
            ]
        page = _page(runs, lambda r: r.id, filter.order, filter.after, filter.offset, filter.limit)
        if filter.preview is None:
            return page
        return [_run_preview(run, filter.preview) for run in page]

    async def list_steps(self, run_id: str) -> list[StepRecord]:
        with self._lock:
            steps = self._steps.get(run_id, {})
            return [steps[seq] for seq in sorted(steps)]

    async def save_step(self, run_id: str, step: StepRecord, *, now: datetime) -> StepRecord:
        with self._lock:
            self._get_run(run_id)
            steps = self._steps.setdefault(run_id, {})
            old = steps.get(step.seq)
            if old is not None and old.state is not StepState.PENDING:
                return old  # a finished record is never overwritten
            steps[step.seq] = step
            return step

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
        with self._lock:
            run = self._get_run(run_id)
            if run.state in TERMINAL_RUN_STATES if expect is None else run.state not in expect:
                return None
            if generation is not None and run.generation != generation:
                return None
            if (
                state is RunState.WAITING
                and waiting_for is not None
                and self._pending_event(run_id, waiting_for) is not None
            ):
                return None  # the event is already here: the caller takes it instead
            parking = state in (RunState.SLEEPING, RunState.WAITING)
            run = attrs.evolve(
                run,
                state=state,
                output=output,
                error=error,
                wake_at=wake_at,
                waiting_for=waiting_for,
                updated_at=now,
                finished_at=now if state in TERMINAL_RUN_STATES else run.finished_at,
                generation=run.generation + 1 if parking else run.generation,
            )
            self._runs[run_id] = run
            if driver is not None:
                self._enqueue_locked([driver])
        if driver is not None:
            self._notify()
        return run

    async def send_event(self, event: NewEvent, *, driver: NewJob, now: datetime) -> bool:
        with self._lock:
            run = self._runs.get(event.run_id)
            if run is None or run.tenant != event.tenant:
                raise RunNotFoundError(event.run_id)
            self._events.setdefault(run.id, []).append(
                WorkflowEvent(
                    id=event.id,
                    name=event.name,
                    payload=event.payload,
                    created_at=event.created_at,
                    run_id=event.run_id,
                    tenant=event.tenant,
                )
            )
            if run.state is not RunState.WAITING or run.waiting_for != event.name:
                return False
            self._runs[run.id] = attrs.evolve(
                run, state=RunState.RUNNING, waiting_for=None, wake_at=None, updated_at=now
            )
            key = f"wf:{run.id}:{run.generation}"
            job_id = self._unique.get((run.tenant, key))
            row = self._jobs.get(job_id) if job_id is not None else None
            if row is None:
                self._enqueue_locked([attrs.evolve(driver, unique_key=key)])
            elif row.state is _PENDING and row.run_at > now:
                row.run_at = row.updated_at = now  # the timeout timer wakes the run now
                self._make_runnable(row, now)
        self._notify()
        return True

    async def take_event(
        self, run_id: str, name: str, *, seq: int, now: datetime
    ) -> WorkflowEvent | None:
        with self._lock:
            events = self._events.get(run_id, [])
            for ev in events:
                if ev.name == name and ev.consumed_seq == seq:
                    return ev  # a replay of the wait that consumed it
            i = self._pending_event(run_id, name)
            if i is None:
                return None
            events[i] = taken = attrs.evolve(events[i], consumed_seq=seq)
            return taken


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


_T = TypeVar("_T")


def _page(
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


def _job_preview(job: Job, limit: int) -> Job:
    """``job`` with its payload and result as :class:`Truncated` when they are too long."""
    payload, result = Truncated.of(job.payload, limit), Truncated.of(job.result, limit)
    if payload is job.payload and result is job.result:
        return job
    return attrs.evolve(job, payload=payload, result=result)


def _entry_preview(entry: DLQEntry, limit: int) -> DLQEntry:
    """``entry`` with its payload as :class:`Truncated` when it is too long."""
    payload = Truncated.of(entry.payload, limit)
    return entry if payload is entry.payload else attrs.evolve(entry, payload=payload)


def _run_preview(run: WorkflowRun, limit: int) -> WorkflowRun:
    """``run`` with its input and output as :class:`Truncated` when they are too long."""
    input_, output = Truncated.of(run.input, limit), Truncated.of(run.output, limit)
    if input_ is run.input and output is run.output:
        return run
    return attrs.evolve(run, input=input_, output=output)


def _dlq_matches(
    entry: DLQEntry, queue: str | None, tenant: str | None, replayed: bool | None = None
) -> bool:
    return (
        (queue is None or entry.queue == queue)
        and (tenant is None or entry.tenant == tenant)
        and (replayed is None or (entry.replayed_at is not None) == replayed)
    )


def _rescue_error(worker_id: str | None, worker: WorkerInfo | None) -> str:
    """Why a job was taken back, by what its worker's row says: a crash reads as a crash."""
    state = worker.state if worker is not None else None
    if state is WorkerState.DEAD:
        return f"worker {worker_id} died: it sent no heartbeat within the worker timeout"
    if state is WorkerState.STOPPED:
        return f"worker {worker_id} stopped or restarted without finishing the job"
    return f"worker {worker_id or '?'} died or stalled: its lease expired without a heartbeat"
