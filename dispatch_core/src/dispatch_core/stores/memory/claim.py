"""The memory store's hot path: claim (with queue limits), heartbeat, finish, rescue and the
next due time."""

from __future__ import annotations

import heapq
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta

import attrs

from dispatch_core.cluster import WorkerInfo, WorkerState
from dispatch_core.models import DLQEntry, Job, Outcome, OutcomeKind
from dispatch_core.queues import QueueConfig, TokenBucket
from dispatch_core.states import RUNNABLE_STATES
from dispatch_core.storekit import new_id, new_token
from dispatch_core.stores.memory.state import (
    COMPLETED,
    FAILED,
    PENDING,
    RETRYING,
    RUNNING,
    JobRow,
    MemoryState,
    QueueRow,
    Ready,
)

__all__ = ["ClaimOps"]


class ClaimOps(MemoryState):
    """The worker's calls: claim, heartbeat, finish, rescue_expired and next_run_at."""

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
            skipped: list[tuple[list[Ready], Ready]] = []
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
                claimed.append(self._start(row, worker_id, lease_until, now))
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
        lanes: list[tuple[list[Ready], _Gate | None]] = []
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
        skipped: list[tuple[list[Ready], Ready]] = []
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
            claimed.append(self._start(row, worker_id, lease_until, now))
        for heap, entry in skipped:
            heapq.heappush(heap, entry)
        return claimed

    def _promote_due(self, now: datetime) -> None:
        sched = self._scheduled
        while sched and sched[0][0] <= now:
            _, job_id = heapq.heappop(sched)
            row = self._jobs.get(job_id)
            if row is not None and row.state in RUNNABLE_STATES and row.run_at <= now:
                heapq.heappush(
                    self._ready.setdefault(row.queue, []), (-row.priority, row.run_at, row.id)
                )

    def _start(self, row: JobRow, worker_id: str, lease_until: datetime, now: datetime) -> Job:
        """Lease the claimed ``row`` to ``worker_id`` for a new attempt."""
        row.state = RUNNING
        row.attempt += 1
        row.worker_id = worker_id
        row.attempt_token = new_token()
        row.started_at = row.updated_at = now
        row.lease_expires_at = lease_until
        self._running.add(row.id)
        return row.to_job()

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
                if row is None or row.state is not RUNNING or row.attempt_token != token:
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
                if row is None or row.state is not RUNNING or row.attempt_token != o.attempt_token:
                    written.append(False)
                    continue
                self._running.discard(row.id)
                row.free_lease()
                row.updated_at = now
                kind = o.kind
                if kind is OutcomeKind.COMPLETED:
                    row.state = COMPLETED
                    row.result = o.result
                    row.finished_at = now
                elif kind is OutcomeKind.RETRY:
                    row.state = RETRYING
                    row.last_error = o.error
                    row.run_at = o.run_at or now
                    self._make_runnable(row, now)
                    wake = True
                elif kind is OutcomeKind.FAIL:
                    row.state = FAILED
                    row.last_error = o.error
                    row.finished_at = now
                    self._dead_letter(row, o.error or "", now)
                else:  # RELEASE: the attempt is given back
                    row.state = PENDING
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
                    row.state = FAILED
                    row.finished_at = now
                    self._dead_letter(row, error, now)
                else:
                    row.state = RETRYING
                    row.run_at = now
                    self._make_runnable(row, now)
                rescued.append(row.to_job())
        if rescued:
            self._notify()
        return rescued

    def _dead_letter(self, row: JobRow, error: str, now: datetime) -> None:
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


class _Gate:
    """One claim's view of a limited queue: running counts and buckets per allowance key."""

    __slots__ = ("config", "now", "queue", "running")

    def __init__(self, queue: QueueRow, config: QueueConfig, now: datetime) -> None:
        self.queue = queue
        self.config = config
        self.now = now
        self.running: dict[str | None, int] = {}

    def key(self, row: JobRow) -> str | None:
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


def _rescue_error(worker_id: str | None, worker: WorkerInfo | None) -> str:
    """Why a job was taken back, by what its worker's row says: a crash reads as a crash."""
    state = worker.state if worker is not None else None
    if state is WorkerState.DEAD:
        return f"worker {worker_id} died: it sent no heartbeat within the worker timeout"
    if state is WorkerState.STOPPED:
        return f"worker {worker_id} stopped or restarted without finishing the job"
    return f"worker {worker_id or '?'} died or stalled: its lease expired without a heartbeat"
