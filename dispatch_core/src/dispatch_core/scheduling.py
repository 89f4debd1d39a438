"""The engine's cluster API: cron entries, queue limits, retention, workers and the leader.

:class:`ClusterAPI` is a part of :class:`~dispatch_core.engine.Engine` (a base class kept in
its own module so the engine stays readable). Declarations made in code (``@engine.cron``,
``engine.schedule``, ``engine.queue``) are written to the store by every worker when it
starts (:meth:`ClusterAPI.apply_schedules`); the store is the truth the whole cluster shares,
so enabling, disabling and pausing from the CLI or the API persist across restarts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from dispatch_core.cluster import WorkerInfo, WorkerState
from dispatch_core.cron import CronEntry, CronSchedule, MisfirePolicy
from dispatch_core.errors import ConfigurationError
from dispatch_core.leader import cron_new_job
from dispatch_core.models import Job, RunnableCount, utcnow
from dispatch_core.queues import QueueConfig, QueueStats
from dispatch_core.retention import Retention
from dispatch_core.serde import to_json_payload

if TYPE_CHECKING:
    from dispatch_core.definition import JobDefinition
    from dispatch_core.engine import Engine

__all__ = ["ClusterAPI", "CronSpec"]


@attrs.frozen(kw_only=True)
class CronSpec:
    """A cron entry as declared in code (the store adds its state: enabled, next run...)."""

    name: str
    schedule: CronSchedule
    job_name: str
    payload: Any
    queue: str | None
    misfire: MisfirePolicy
    misfire_grace: float

    def entry(self, now: datetime) -> CronEntry:
        """The entry to upsert at ``now``."""
        return CronEntry(
            name=self.name,
            expr=self.schedule.expr,
            timezone=self.schedule.timezone,
            job_name=self.job_name,
            payload=self.payload,
            queue=self.queue,
            misfire=self.misfire,
            misfire_grace=self.misfire_grace,
            next_run_at=self.schedule.next_after(now),
            created_at=now,
            updated_at=now,
        )


class ClusterAPI:
    """Cron, queues, retention, workers and leader: the part of the engine about the cluster."""

    #: How long the leader keeps finished jobs, dead-letter entries and worker rows
    #: (``None``: it prunes nothing).
    retention: Retention | None

    def _init_cluster(self, retention: Retention | None) -> None:
        self.retention = retention
        self._cron_specs: dict[str, CronSpec] = {}
        self._queue_configs: dict[str, QueueConfig] = {}

    def _engine(self) -> Engine:
        return self  # type: ignore[return-value]

    # -- declarations ------------------------------------------------------------------------------

    def cron(
        self,
        expr: str,
        *,
        name: str | None = None,
        timezone: str = "UTC",
        misfire: MisfirePolicy | str = MisfirePolicy.ONCE,
        misfire_grace: float = 60.0,
        queue: str | None = None,
        max_retries: int = 3,
        timeout: float | None = 300.0,
        priority: int = 0,
    ) -> Callable[[Callable[..., Any]], JobDefinition[None]]:
        """Register a handler that takes no payload as a job, and run it on a schedule.

        ``@engine.cron("*/5 * * * *")`` over ``async def cleanup() -> None`` (or one taking a
        :class:`JobContext`). The entry and the job share ``name`` (default:
        ``module.qualname``). See :meth:`schedule` for the arguments.

        Raises:
            CronExpressionError: the expression or the timezone is invalid (says why).
        """
        schedule = CronSchedule(expr=expr, timezone=timezone)  # refuse a bad one at once

        def register(fn: Callable[..., Any]) -> JobDefinition[None]:
            engine = self._engine()
            definition: JobDefinition[None] = engine.job(
                name=name,
                queue=queue or "default",
                max_retries=max_retries,
                timeout=timeout,
                priority=priority,
            )(fn)
            if definition.takes_payload:
                raise ConfigurationError(
                    f"cron job {definition.name!r} takes a payload; use engine.schedule(...) "
                    "to give one, or drop the parameter"
                )
            self._add_cron(
                definition.name, schedule, definition, None, misfire, misfire_grace, None
            )
            return definition

        return register

    def schedule(
        self,
        name: str,
        expr: str,
        job: JobDefinition[Any] | str,
        payload: Any = None,
        *,
        timezone: str = "UTC",
        misfire: MisfirePolicy | str = MisfirePolicy.ONCE,
        misfire_grace: float = 60.0,
        queue: str | None = None,
    ) -> CronSpec:
        """Enqueue ``job`` with ``payload`` on a cron schedule.

        Args:
            name: The entry's unique name.
            expr: Five fields (minute hour day month weekday), six with seconds first, or an
                alias (``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``).
            job: A registered job (definition or name).
            payload: The payload, validated now against the job's type.
            timezone: IANA timezone the expression is read in (default UTC).
            misfire: ``"once"`` (default): after downtime, fire once for the missed ticks;
                ``"skip"``: drop ticks later than ``misfire_grace`` seconds.
            misfire_grace: See ``misfire``.
            queue: Queue of the jobs (default: the job's).

        Raises:
            CronExpressionError: the expression or the timezone is invalid (says why).
            UnknownJobError: ``job`` is not registered.
            PayloadError: the payload does not fit the job's type.
        """
        schedule = CronSchedule(expr=expr, timezone=timezone)
        definition = self._engine()._definition_of(job)
        return self._add_cron(name, schedule, definition, payload, misfire, misfire_grace, queue)

    def _add_cron(
        self,
        name: str,
        schedule: CronSchedule,
        definition: JobDefinition[Any],
        payload: Any,
        misfire: MisfirePolicy | str,
        misfire_grace: float,
        queue: str | None,
    ) -> CronSpec:
        try:
            policy = MisfirePolicy(misfire)
        except ValueError:
            raise ConfigurationError(
                f"cron {name!r}: misfire must be 'once' or 'skip', got {misfire!r}"
            ) from None
        if misfire_grace < 0:
            raise ConfigurationError(f"cron {name!r}: misfire_grace must be >= 0")
        engine = self._engine()
        raw = None
        if definition.takes_payload or payload is not None:
            raw = to_json_payload(
                engine.converter, definition.name, definition.payload_type, payload
            )
        spec = CronSpec(
            name=name,
            schedule=schedule,
            job_name=definition.name,
            payload=raw,
            queue=queue,
            misfire=policy,
            misfire_grace=misfire_grace,
        )
        self._cron_specs[name] = spec
        return spec

    @property
    def cron_specs(self) -> dict[str, CronSpec]:
        """Cron entries declared in this process, by name."""
        return dict(self._cron_specs)

    def queue(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        rate: float | None = None,
        burst: int | None = None,
        per_tenant: bool = False,
    ) -> QueueConfig:
        """Declare a queue's cluster-wide limits (see :class:`QueueConfig`); workers write
        them to the store when they start."""
        config = QueueConfig(
            name=name, concurrency=concurrency, rate=rate, burst=burst, per_tenant=per_tenant
        )
        self._queue_configs[name] = config
        return config

    async def apply_schedules(self) -> None:
        """Write the cron entries and queue limits declared in code to the store.

        Workers call it when they start. Re-registering an entry updates its schedule, job and
        payload, and keeps its enabled flag and, when the schedule is the same, its next tick.
        """
        engine = self._engine()
        await engine.aopen()
        now = utcnow()
        if self._cron_specs:
            await engine.store.upsert_cron(
                [spec.entry(now) for spec in self._cron_specs.values()], now=now
            )
        for config in self._queue_configs.values():
            await engine.store.set_queue(config)

    # -- cron control ------------------------------------------------------------------------------

    async def acron_entries(self) -> list[CronEntry]:
        """Every cron entry in the store, by name."""
        engine = self._engine()
        await engine.aopen()
        return await engine.store.list_cron()

    async def aget_cron(self, name: str) -> CronEntry:
        """One cron entry. Raises :class:`CronNotFoundError`."""
        engine = self._engine()
        await engine.aopen()
        return await engine.store.get_cron(name)

    async def aenable_cron(self, name: str) -> CronEntry:
        """Enable an entry; its next tick is the first one from now (no misfire)."""
        engine = self._engine()
        await engine.aopen()
        entry = await engine.store.get_cron(name)
        now = utcnow()
        return await engine.store.set_cron_enabled(
            name, enabled=True, next_run_at=entry.schedule().next_after(now), now=now
        )

    async def adisable_cron(self, name: str) -> CronEntry:
        """Disable an entry: the leader stops firing it, until enabled again."""
        engine = self._engine()
        await engine.aopen()
        entry = await engine.store.get_cron(name)
        return await engine.store.set_cron_enabled(
            name, enabled=False, next_run_at=entry.next_run_at, now=utcnow()
        )

    async def atrigger_cron(self, name: str) -> Job:
        """Enqueue an entry's job now, outside its schedule (its ticks are unchanged)."""
        engine = self._engine()
        await engine.aopen()
        entry = await engine.store.get_cron(name)
        now = utcnow()
        new = cron_new_job(engine, entry, tick=None, now=now)
        with engine.producer.scope((new,)):
            [job] = await engine.store.enqueue([new])
        engine.producer.enqueued([job], [new])
        if engine.hooks.wants("dispatch_cron_fired"):
            engine.hooks.emit("dispatch_cron_fired", entry_name=name, job_id=job.id, engine=engine)
        return job

    async def aunschedule(self, name: str) -> bool:
        """Delete a cron entry from the store; return whether it existed. (An entry still
        declared in code comes back when a worker starts.)"""
        engine = self._engine()
        await engine.aopen()
        self._cron_specs.pop(name, None)
        return await engine.store.delete_cron(name)

    # -- queues ------------------------------------------------------------------------------------

    async def aqueues(self) -> list[QueueStats]:
        """Every queue with its limits, pause flag, depth, running jobs and recent rate."""
        engine = self._engine()
        await engine.aopen()
        return await engine.store.list_queues(now=utcnow())

    async def aset_queue(self, config: QueueConfig) -> None:
        """Set a queue's limits in the store now (cluster-wide, at once)."""
        engine = self._engine()
        await engine.aopen()
        await engine.store.set_queue(config)

    async def apause_queue(self, name: str) -> None:
        """Pause a queue: no worker claims its jobs until it is resumed; running ones finish."""
        engine = self._engine()
        await engine.aopen()
        await engine.store.pause_queue(name, paused=True)

    async def aresume_queue(self, name: str) -> None:
        """Resume a paused queue."""
        engine = self._engine()
        await engine.aopen()
        await engine.store.pause_queue(name, paused=False)
        engine.producer.wake()

    # -- workers, leader, retention ----------------------------------------------------------------

    async def aworkers(self) -> list[WorkerInfo]:
        """Every registered worker, live and dead, oldest first; ``leader`` marks the one
        holding the leader lease."""
        engine = self._engine()
        await engine.aopen()
        return await engine.store.list_workers()

    async def aunhandled_jobs(self, *, tenant: str | None = None) -> list[RunnableCount]:
        """Runnable jobs that no running worker will take, counted by queue and name.

        A job is unhandled when no worker in state ``running`` both takes its queue and has
        its name registered: typically a job enqueued under a name the workers never import
        (a job defined in a script run as ``__main__``, a renamed handler, a worker deployed
        without the module). Such jobs would otherwise wait forever without a word. With no
        running worker at all, every runnable job is listed. Workers that did not report
        their names (older versions) count as taking every name of their queues.

        Args:
            tenant: Only this tenant's jobs.

        Returns:
            Rows ordered by queue then name; empty when every waiting job has a worker.
        """
        engine = self._engine()
        await engine.aopen()
        live = [w for w in await engine.store.list_workers() if w.state is WorkerState.RUNNING]
        # Names taken from every queue can be left out by the store itself.
        everywhere = {n for w in live if w.queues is None and w.names is not None for n in w.names}
        rows = await engine.store.count_runnable(
            now=utcnow(), tenant=tenant, exclude_names=everywhere
        )
        return [row for row in rows if not any(_takes(w, row) for w in live)]

    async def aleader(self) -> str | None:
        """The id of the current leader, or ``None`` when the cluster has none."""
        engine = self._engine()
        await engine.aopen()
        return await engine.store.get_leader(now=utcnow())

    async def aprune(self, retention: Retention | None = None) -> int:
        """Prune old rows now, with ``retention`` (default: the engine's); return how many
        rows were deleted. The leader does this by itself every ``retention.interval``."""
        policy = retention or self.retention
        if policy is None:
            return 0
        engine = self._engine()
        await engine.aopen()
        total = 0
        while True:
            deleted = await engine.store.prune(policy.cutoffs(utcnow()), limit=policy.batch)
            total += deleted
            if deleted < policy.batch:
                return total


def _takes(worker: WorkerInfo, row: RunnableCount) -> bool:
    """Whether ``worker`` would claim the jobs of ``row``."""
    if worker.queues is not None and row.queue not in worker.queues:
        return False
    return worker.names is None or row.name in worker.names
