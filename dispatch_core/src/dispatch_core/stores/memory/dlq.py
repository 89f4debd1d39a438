"""The memory store's dead-letter queue: list, count, read, replay and purge its entries."""

from __future__ import annotations

from datetime import datetime

import attrs

from dispatch_core.errors import DLQEntryNotFoundError
from dispatch_core.models import DLQEntry, DLQFilter, Job
from dispatch_core.storekit import Truncated
from dispatch_core.stores.memory.state import MemoryState, page

__all__ = ["DLQOps"]


class DLQOps(MemoryState):
    """The dead-letter entries that ``finish`` and ``rescue_expired`` write."""

    async def list_dlq(self, filter: DLQFilter) -> list[DLQEntry]:
        with self._lock:
            entries = [
                e
                for e in self._dlq.values()
                if _dlq_matches(e, filter.queue, filter.tenant, filter.replayed)
            ]
        entries = [e for e in entries if filter.name is None or e.name == filter.name]
        found = page(
            entries, lambda e: e.id, filter.order, filter.after, filter.offset, filter.limit
        )
        if filter.preview is None:
            return found
        return [_entry_preview(entry, filter.preview) for entry in found]

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


def _dlq_matches(
    entry: DLQEntry, queue: str | None, tenant: str | None, replayed: bool | None = None
) -> bool:
    return (
        (queue is None or entry.queue == queue)
        and (tenant is None or entry.tenant == tenant)
        and (replayed is None or (entry.replayed_at is not None) == replayed)
    )


def _entry_preview(entry: DLQEntry, limit: int) -> DLQEntry:
    """``entry`` with its payload as :class:`Truncated` when it is too long."""
    payload = Truncated.of(entry.payload, limit)
    return entry if payload is entry.payload else attrs.evolve(entry, payload=payload)
