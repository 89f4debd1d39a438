"""The memory store's jobs section: producing, inspection and control, and the sync twin."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime

import attrs

from dispatch_core.errors import InvalidTransitionError
from dispatch_core.models import Job, JobFilter, NewJob, RunnableCount, ThroughputBucket, utcnow
from dispatch_core.states import RUNNABLE_STATES, JobState, check_transition
from dispatch_core.storekit import Truncated
from dispatch_core.stores.memory.state import CANCELLED, PENDING, RUNNING, MemoryState, page

__all__ = ["JobsOps", "MemorySync"]


class JobsOps(MemoryState):
    """Enqueue, read, list, count, cancel and retry jobs."""

    # -- producing ---------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        with self._lock:
            out = self._enqueue_locked(jobs)
        self._notify()
        return out

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
            found = page(
                rows, lambda r: r.id, filter.order, filter.after, filter.offset, filter.limit
            )
            jobs = [r.to_job() for r in found]
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
            if row.state is RUNNING:
                # RUNNING -> PENDING is the shutdown release, never a manual retry.
                raise InvalidTransitionError(job_id, "running", "pending", "the job is running")
            check_transition(job_id, row.state, PENDING)
            row.state = PENDING
            row.attempt = 0
            row.run_at = row.updated_at = now
            row.finished_at = None
            row.last_error = None
            self._make_runnable(row, now)
            job = row.to_job()
        self._notify()
        return job

    def _cancel_locked(self, job_id: str, now: datetime) -> Job:
        row = self._get(job_id)
        check_transition(job_id, row.state, CANCELLED)
        self._running.discard(job_id)
        row.state = CANCELLED
        row.updated_at = row.finished_at = now
        row.free_lease()
        return row.to_job()


class MemorySync:
    """The blocking producer API of the memory store (it never blocks for long)."""

    def __init__(self, store: JobsOps) -> None:
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


def _job_preview(job: Job, limit: int) -> Job:
    """``job`` with its payload and result as :class:`Truncated` when they are too long."""
    payload, result = Truncated.of(job.payload, limit), Truncated.of(job.result, limit)
    if payload is job.payload and result is job.result:
        return job
    return attrs.evolve(job, payload=payload, result=result)
