"""The memory store's cluster section: workers, the leader lease, cron, queues and retention."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import attrs

from dispatch_core.cluster import WorkerInfo, WorkerState
from dispatch_core.cron import CronEntry
from dispatch_core.errors import CronNotFoundError
from dispatch_core.models import Job, NewJob
from dispatch_core.queues import QueueConfig, QueueStats
from dispatch_core.states import RUNNABLE_STATES
from dispatch_core.store import PruneCutoffs
from dispatch_core.stores.memory.state import (
    CANCELLED,
    COMPLETED,
    FAILED,
    RUNNING,
    MemoryState,
    QueueRow,
)

__all__ = ["ClusterOps"]


class ClusterOps(MemoryState):
    """Worker rows, the leader lease, cron entries, queue settings and pruning."""

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

    def _queue_row(self, name: str) -> QueueRow:
        qrow = self._queues.get(name)
        if qrow is None:
            qrow = self._queues[name] = QueueRow()
        return qrow

    def _reindex_queue(self, name: str, qrow: QueueRow) -> None:
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
                elif state is RUNNING:
                    c[1] += 1
                elif (
                    state is COMPLETED
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
                (COMPLETED, cutoffs.completed),
                (FAILED, cutoffs.failed),
                (CANCELLED, cutoffs.cancelled),
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
