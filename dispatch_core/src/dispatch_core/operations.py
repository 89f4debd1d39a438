"""The operator's view of a Dispatch deployment: what ``dispatch jobs / dlq / cron / workflows /
queues / workers`` call.

:class:`Operations` lists those methods with the :class:`~dispatch_core.Engine`'s signatures.
An Engine satisfies it (it talks to the store), and so does the admin API's client
(``dispatch_plugins.admin.client.AdminClient``, returned by the ``dispatch_remote_operations``
hook), which talks to a remote ``dispatch serve``. Code written against ``Operations`` works
with either::

    async def oldest_failures(ops: Operations) -> list[DLQEntry]:
        return await ops.alist_dlq(limit=10)

Listings page by keyset (``after`` = the last id of the previous page, ``order``): offsets are
left out on purpose, as the admin API does not offer them (they skip and repeat rows while
jobs arrive). ``preview=N`` asks a listing to leave bodies (payloads, results, run inputs and
outputs) longer than N bytes of JSON where they are, and to return each as a
:class:`~dispatch_core.models.Truncated` (its start and its size); the ``aget_*`` reads
return bodies whole. An Engine returns whole bodies when ``preview`` is ``None``; the admin
API always sends previews, so its client then gets the server's default length.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from dispatch_core.cluster import WorkerInfo
from dispatch_core.cron import CronEntry
from dispatch_core.models import DLQEntry, Job, RunnableCount, SortOrder
from dispatch_core.queues import QueueStats
from dispatch_core.states import JobState
from dispatch_core.workflows.models import RunState, StepRecord, WorkflowRun

__all__ = ["Operations"]


@runtime_checkable
class Operations(Protocol):
    """The async operator methods of an :class:`~dispatch_core.Engine`, plus :meth:`aclose`
    and :attr:`safe_url`: inspect and steer jobs, dead letters, cron entries, queues, workers
    and workflow runs.

    Each method behaves (and raises) as the Engine method of the same name does; see there.
    """

    @property
    def safe_url(self) -> str:
        """Where the operations go (a store URL or an admin API URL), password hidden."""
        ...

    async def aclose(self) -> None:
        """Release connections; the object may be used again afterwards."""
        ...

    # -- jobs --------------------------------------------------------------------------------------

    async def alist_jobs(
        self,
        *,
        state: JobState | str | None = None,
        queue: str | None = None,
        name: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
        after: str | None = None,
        order: SortOrder | str = SortOrder.DESC,
        preview: int | None = None,
    ) -> list[Job]:
        """Jobs by id, newest first by default; ``after`` is the last id of the previous
        page; ``preview``: long payloads and results as previews."""
        ...

    async def acount_jobs(
        self, *, queue: str | None = None, tenant: str | None = None
    ) -> dict[JobState, int]:
        """Job counts by state, every state present."""
        ...

    async def aget_job(self, job_id: str) -> Job:
        """One job; raises :class:`~dispatch_core.JobNotFoundError`."""
        ...

    async def acancel(self, job_id: str) -> Job:
        """Cancel an unfinished job; raises :class:`~dispatch_core.InvalidTransitionError`
        for a finished one."""
        ...

    async def aretry(self, job_id: str) -> Job:
        """Send a failed or cancelled job back to pending with fresh attempts."""
        ...

    # -- dead letters ------------------------------------------------------------------------------

    async def alist_dlq(
        self,
        *,
        queue: str | None = None,
        name: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
        after: str | None = None,
        order: SortOrder | str = SortOrder.ASC,
        replayed: bool | None = None,
        preview: int | None = None,
    ) -> list[DLQEntry]:
        """Dead-letter entries by id, oldest failure first by default; ``replayed=False``:
        only those never replayed, ``True``: only replayed ones; ``preview``: long payloads
        as previews."""
        ...

    async def acount_dlq(
        self,
        *,
        queue: str | None = None,
        tenant: str | None = None,
        replayed: bool | None = None,
        before: datetime | None = None,
    ) -> int:
        """The number of dead-letter entries (``before``: only those that failed before)."""
        ...

    async def aget_dlq(self, entry_id: str) -> DLQEntry:
        """One entry; raises :class:`~dispatch_core.DLQEntryNotFoundError`."""
        ...

    async def areplay_dlq(self, entry_id: str) -> Job:
        """Enqueue an entry again as a new job; return the job."""
        ...

    async def apurge_dlq(
        self,
        *,
        before: datetime | None = None,
        older_than: timedelta | None = None,
        queue: str | None = None,
        tenant: str | None = None,
        limit: int | None = None,
    ) -> int:
        """Delete entries that failed before a cutoff, oldest first, at most ``limit``;
        return how many were deleted."""
        ...

    # -- cron --------------------------------------------------------------------------------------

    async def acron_entries(self) -> list[CronEntry]:
        """Every cron entry, by name."""
        ...

    async def aget_cron(self, name: str) -> CronEntry:
        """One cron entry; raises :class:`~dispatch_core.CronNotFoundError`."""
        ...

    async def aenable_cron(self, name: str) -> CronEntry:
        """Enable an entry from its next tick on."""
        ...

    async def adisable_cron(self, name: str) -> CronEntry:
        """Disable an entry."""
        ...

    async def atrigger_cron(self, name: str) -> Job:
        """Enqueue an entry's job now; return it."""
        ...

    # -- queues and workers ------------------------------------------------------------------------

    async def aqueues(self) -> list[QueueStats]:
        """Every queue with its limits, pause flag and load, by name."""
        ...

    async def apause_queue(self, name: str) -> None:
        """Pause a queue."""
        ...

    async def aresume_queue(self, name: str) -> None:
        """Resume a paused queue."""
        ...

    async def aworkers(self) -> list[WorkerInfo]:
        """Every registered worker, oldest first."""
        ...

    async def aleader(self) -> str | None:
        """The id of the leader, or ``None``."""
        ...

    async def aunhandled_jobs(self, *, tenant: str | None = None) -> list[RunnableCount]:
        """Runnable jobs that no running worker takes (its queue and its name), counted by
        queue and name; empty when every waiting job has a worker."""
        ...

    # -- workflows ---------------------------------------------------------------------------------

    async def alist_runs(
        self,
        *,
        state: RunState | str | None = None,
        name: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
        after: str | None = None,
        order: SortOrder | str = SortOrder.DESC,
        preview: int | None = None,
    ) -> list[WorkflowRun]:
        """Workflow runs by id, newest first by default; ``preview``: long inputs and
        outputs as previews."""
        ...

    async def aget_run(self, run_id: str) -> WorkflowRun:
        """One run; raises :class:`~dispatch_core.RunNotFoundError`."""
        ...

    async def atimeline(self, run_id: str) -> list[StepRecord]:
        """A run's history: steps, sleeps, waits."""
        ...

    async def acancel_run(self, run_id: str) -> WorkflowRun:
        """Cancel an unfinished run; raises :class:`~dispatch_core.WorkflowError` for a
        finished one."""
        ...

    async def areplay_run(self, run_id: str, from_step: str) -> WorkflowRun:
        """Run a finished run again from ``from_step``, as a new run; return it."""
        ...

    async def asend_event(
        self,
        name: str,
        payload: Any = None,
        *,
        run_id: str | None = None,
        correlation_key: str | None = None,
        tenant: str | None = None,
    ) -> list[str]:
        """Send an event to a run (or the runs of a correlation key); return the ids of the
        runs it reached."""
        ...
