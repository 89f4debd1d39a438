"""The engine's workflow API: ``@engine.workflow``, starting runs, reading and steering them.

:class:`WorkflowAPI` is a base class of :class:`~dispatch_core.engine.Engine`, kept in its
own module. Runs execute as jobs of the built-in job ``dispatch.workflow`` on ordinary
workers, never in the caller's stack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from dispatch_core._ids import new_id
from dispatch_core._naming import default_name
from dispatch_core.context import current_tenant
from dispatch_core.models import SortOrder, utcnow
from dispatch_core.workflows.definition import WorkflowDefinition
from dispatch_core.workflows.errors import WorkflowError
from dispatch_core.workflows.models import (
    TERMINAL_RUN_STATES,
    NewEvent,
    NewRun,
    RunFilter,
    RunState,
    StepRecord,
    WorkflowRun,
)
from dispatch_core.workflows.registry import WorkflowRegistry
from dispatch_core.workflows.runtime import cancel_key, new_driver

if TYPE_CHECKING:
    from dispatch_core.engine import Engine

__all__ = ["WorkflowAPI"]

T = TypeVar("T")


class WorkflowAPI:
    """Workflows: the part of the engine that defines, starts and steers them."""

    def _init_workflows(self) -> None:
        #: The workflows this engine knows (core's internal API; see its module).
        self.workflow_registry = WorkflowRegistry(self._wf_engine())

    def _wf_engine(self) -> Engine:
        return self  # type: ignore[return-value]

    def workflow(
        self,
        *,
        name: str | None = None,
        version: int = 1,
        queue: str = "default",
        priority: int = 0,
    ) -> Callable[[Callable[..., Any]], WorkflowDefinition[Any, Any]]:
        """Register ``async def handler(wf, input) -> result`` as a durable workflow.

        Args:
            name: Stable name (default ``module.qualname``, the module named as a worker
                imports it, also for a script run as ``__main__``).
            version: New runs start on the highest registered version; a run keeps the
                version it started on, so keep old versions registered while runs use them.
            queue: Queue of the jobs that drive its runs.
            priority: Priority of those jobs.
        """

        def register(fn: Callable[..., Any]) -> WorkflowDefinition[Any, Any]:
            engine = self._wf_engine()
            wf_name = name or default_name(fn)
            definition: WorkflowDefinition[Any, Any] = WorkflowDefinition(
                engine=engine,
                fn=fn,
                name=wf_name,
                version=version,
                queue=queue,
                priority=priority,
            )
            self.workflow_registry.add(definition)
            return definition

        return register

    @property
    def workflows(self) -> dict[str, WorkflowDefinition[Any, Any]]:
        """The latest version of each registered workflow, by name."""
        return self.workflow_registry.latest()

    # -- reading -----------------------------------------------------------------------------------

    async def aget_run(self, run_id: str) -> WorkflowRun:
        """The run. Raises :class:`~dispatch_core.errors.RunNotFoundError`."""
        engine = self._wf_engine()
        await engine.aopen()
        return await engine.store.get_run(run_id)

    async def alist_runs(
        self,
        *,
        state: RunState | str | None = None,
        name: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
        offset: int = 0,
        after: str | None = None,
        order: SortOrder | str = SortOrder.DESC,
        preview: int | None = None,
    ) -> list[WorkflowRun]:
        """Runs, newest first (or ``order="asc"``), optionally filtered; ``after`` is the last
        id of the previous page. With ``preview`` N, inputs and outputs longer than N bytes
        of JSON come back as :class:`~dispatch_core.models.Truncated`."""
        engine = self._wf_engine()
        await engine.aopen()
        return await engine.store.list_runs(
            RunFilter(
                state=RunState(state) if state is not None else None,
                name=name,
                tenant=tenant,
                limit=limit,
                offset=offset,
                after=after,
                order=SortOrder(order),
                preview=preview,
            )
        )

    async def atimeline(self, run_id: str) -> list[StepRecord]:
        """A run's history: every step, sleep and wait, with timings, attempts and outputs."""
        engine = self._wf_engine()
        await engine.aopen()
        await engine.store.get_run(run_id)  # RunNotFoundError for an unknown id
        return await engine.store.list_steps(run_id)

    # -- steering ----------------------------------------------------------------------------------

    async def asend_event(
        self,
        name: str,
        payload: Any = None,
        *,
        run_id: str | None = None,
        correlation_key: str | None = None,
        tenant: str | None = None,
    ) -> list[str]:
        """Send the event ``name`` to a run, or to every unfinished run of a correlation key,
        within ``tenant``; return the ids of the runs it reached. A run waiting for it wakes.

        ``tenant`` defaults to the one in scope (:func:`~dispatch_core.tenant_scope`, or the
        running job's). With no tenant at all (an operator's call) the event reaches runs of
        any tenant, each receiving it in its own tenant.

        Raises:
            RunNotFoundError: ``run_id`` names no run of this tenant.
        """
        if (run_id is None) == (correlation_key is None):
            raise ValueError("give run_id or correlation_key, not both and not neither")
        if tenant is None:
            tenant = current_tenant()
        engine = self._wf_engine()
        await engine.aopen()
        raw = engine.converter.unstructure(payload)
        if run_id is not None:
            targets = [await engine.store.get_run(run_id)]
        else:
            targets = [
                r
                for r in await engine.store.list_runs(
                    RunFilter(correlation_key=correlation_key, tenant=tenant, limit=10_000)
                )
                if r.state not in TERMINAL_RUN_STATES
            ]
        reached = []
        for run in targets:
            queue, priority = self.workflow_registry.driver_options(run)
            event = NewEvent(
                id=new_id("evt"),
                run_id=run.id,
                name=name,
                payload=raw,
                created_at=utcnow(),
                # No tenant in scope (an operator, an untenanted app): each run gets the
                # event in its own tenant, as events never cross tenants.
                tenant=tenant if tenant is not None else run.tenant,
            )
            driver = new_driver(
                run=run, generation=run.generation, queue=queue, priority=priority, run_at=None
            )
            with engine.producer.scope((driver,)):
                woken = await engine.store.send_event(event, driver=driver, now=utcnow())
            reached.append(run.id)
            if woken:
                engine.producer.wake()
        return reached

    async def acancel_run(self, run_id: str) -> WorkflowRun:
        """Cancel an unfinished run: it stops at its next step (a step already running
        finishes; nothing after it runs), and the compensations of its completed steps run,
        newest first, in a job.

        Raises:
            WorkflowError: the run has already finished.
        """
        engine = self._wf_engine()
        await engine.aopen()
        current = await engine.store.get_run(run_id)
        queue, priority = self.workflow_registry.driver_options(current)
        compensate = new_driver(
            run=current,
            generation=current.generation,
            queue=queue,
            priority=priority,
            run_at=None,
            unique_key=cancel_key(run_id),
        )
        run = await engine.store.update_run(
            run_id, state=RunState.CANCELLED, now=utcnow(), driver=compensate
        )
        if run is None:
            current = await engine.store.get_run(run_id)
            raise WorkflowError(f"workflow run {run_id!r} is already {current.state.value}")
        engine.producer.wake()
        return run

    async def amigrate_run(self, run_id: str, to_version: int) -> WorkflowRun:
        """Move an unfinished run to another registered version of its workflow, on purpose:
        its next replay runs that version's handler against the history it has (the
        determinism guard still applies, so the new handler must call the same primitives up
        to where the run stands).

        Raises:
            WorkflowError: the version is not registered here, or the run has finished or
                moved on (parked again) while this call read it; try again.
        """
        engine = self._wf_engine()
        await engine.aopen()
        run = await engine.store.get_run(run_id)
        self.workflow_registry.definition(run.name, to_version)  # refuse an unknown version now
        moved = await engine.store.set_run_version(
            run_id, to_version, generation=run.generation, now=utcnow()
        )
        if moved is None:
            current = await engine.store.get_run(run_id)
            raise WorkflowError(
                f"workflow run {run_id!r} could not be migrated: it is {current.state.value} "
                f"(park {current.generation}, was {run.generation})"
            )
        return moved

    async def areplay_run(self, run_id: str, from_step: str) -> WorkflowRun:
        """Run a finished run again from the step ``from_step``, as a new run.

        The new run (not a child of anything) has the same workflow, version, input, tenant
        and correlation key, and a
        copy of the history before ``from_step``: those steps (and sleeps, events, children)
        return their recorded results without running, ``from_step`` and what follows run
        again. The original run and its history are left as they were (the store keeps
        finished history records for good).

        Raises:
            WorkflowError: the run is not finished, or has no step ``from_step``.
        """
        engine = self._wf_engine()
        await engine.aopen()
        store = engine.store
        old = await store.get_run(run_id)
        if old.state not in TERMINAL_RUN_STATES:
            raise WorkflowError(
                f"workflow run {run_id!r} is {old.state.value}: cancel it before replaying it"
            )
        history = await store.list_steps(run_id)
        start = next((r.seq for r in history if r.name == from_step), None)
        if start is None:
            raise WorkflowError(f"workflow run {run_id!r} has no step {from_step!r}")
        queue, priority = self.workflow_registry.driver_options(old)
        now = utcnow()
        new = NewRun(
            id=new_id("wfrun"),
            name=old.name,
            version=old.version,
            input=old.input,
            created_at=now,
            tenant=old.tenant,
            correlation_key=old.correlation_key,
        )
        placeholder = WorkflowRun(
            id=new.id,
            name=new.name,
            version=new.version,
            input=new.input,
            state=RunState.RUNNING,
            created_at=now,
            updated_at=now,
            tenant=new.tenant,
        )
        # The run is created with a job that does nothing, so that no driver replays it
        # before its history is copied; the real driver is enqueued after the copy.
        hold = new_driver(
            run=placeholder,
            generation=0,
            queue=queue,
            priority=priority,
            run_at=None,
            unique_key=f"wf:{new.id}:hold",
        )
        run = await store.create_run(
            new, attrs.evolve(hold, payload={"run_id": new.id, "hold": True})
        )
        for record in history:
            if record.seq < start:
                await store.save_step(new.id, record, now=now)
        started = await store.update_run(
            new.id,
            state=RunState.RUNNING,
            now=utcnow(),
            expect=frozenset({RunState.RUNNING}),
            generation=0,
            driver=new_driver(run=run, generation=0, queue=queue, priority=priority, run_at=None),
        )
        engine.producer.wake()
        if engine.hooks.wants("dispatch_workflow_started"):
            engine.hooks.emit("dispatch_workflow_started", run=started or run, engine=engine)
        return started or run
