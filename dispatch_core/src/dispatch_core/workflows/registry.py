"""The engine's workflow registry: definitions by name and version, and how runs start.

The engine owns one (``engine.workflow_registry``, core's internal API like
``engine.producer``); :class:`~dispatch_core.workflows.api.WorkflowAPI`'s public methods, the
definitions and the runtime use it instead of private engine methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dispatch_core._ids import new_id
from dispatch_core.context import JobContext, current_tenant
from dispatch_core.errors import ConfigurationError
from dispatch_core.models import utcnow
from dispatch_core.workflows.errors import WorkflowError
from dispatch_core.workflows.models import NewRun, RunState, WorkflowRun
from dispatch_core.workflows.runtime import DRIVER_JOB, drive

if TYPE_CHECKING:
    from dispatch_core.engine import Engine
    from dispatch_core.workflows.definition import WorkflowDefinition

__all__ = ["WorkflowRegistry"]


class WorkflowRegistry:
    """The workflows one engine knows, by name and version.

    Args:
        engine: The engine whose store runs are started in.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: name -> version -> definition
        self.versions: dict[str, dict[int, WorkflowDefinition[Any, Any]]] = {}

    def add(self, definition: WorkflowDefinition[Any, Any]) -> None:
        """Register ``definition`` (and, once, the job that drives every run).

        Raises:
            ConfigurationError: another handler holds that name and version.
        """
        versions = self.versions.setdefault(definition.name, {})
        held = versions.get(definition.version)
        if held is not None and held.fn is not definition.fn:
            raise ConfigurationError(
                f"workflow {definition.name!r} version {definition.version} is already "
                f"registered by {held.fn.__qualname__}"
            )
        versions[definition.version] = definition
        self._ensure_driver()

    def latest(self) -> dict[str, WorkflowDefinition[Any, Any]]:
        """The latest version of each registered workflow, by name."""
        return {name: v[max(v)] for name, v in self.versions.items()}

    def definition(self, name: str, version: int) -> WorkflowDefinition[Any, Any]:
        """The definition of ``name`` at ``version``.

        Raises:
            WorkflowError: this process does not register it.
        """
        versions = self.versions.get(name)
        if not versions:
            raise WorkflowError(f"workflow {name!r} is not registered in this process")
        definition = versions.get(version)
        if definition is None:
            raise WorkflowError(
                f"workflow {name!r} has no version {version} here (registered: "
                f"{sorted(versions)}); keep old versions registered while runs use them, or "
                "migrate those runs"
            )
        return definition

    def driver_options(self, run: WorkflowRun) -> tuple[str, int]:
        """Queue and priority of a run's driver jobs: its definition's, or the defaults when
        this process does not register it (the CLI with only a store URL)."""
        definition = self.versions.get(run.name, {}).get(run.version)
        if definition is None:
            return "default", 0
        return definition.queue, definition.priority

    async def start(
        self,
        definition: WorkflowDefinition[Any, Any],
        input: Any,
        *,
        tenant: str | None,
        correlation_key: str | None,
        run_id: str | None = None,
        parent_run_id: str | None = None,
    ) -> WorkflowRun:
        """Start a run of the latest version of ``definition``'s workflow and return it."""
        engine = self.engine
        if tenant is None:
            tenant = current_tenant()
        latest = self.definition(definition.name, max(self.versions[definition.name]))
        raw = latest._encode_input(input)
        await engine.aopen()
        now = utcnow()
        new = NewRun(
            id=run_id or new_id("wfrun"),
            name=latest.name,
            version=latest.version,
            input=raw,
            created_at=now,
            tenant=tenant,
            parent_run_id=parent_run_id,
            correlation_key=correlation_key,
        )
        placeholder = WorkflowRun(
            id=new.id,
            name=new.name,
            version=new.version,
            input=raw,
            state=RunState.RUNNING,
            created_at=now,
            updated_at=now,
            tenant=tenant,
            parent_run_id=parent_run_id,
        )
        driver = latest._driver_job(placeholder, 0, run_at=None)
        with engine.producer.scope((driver,)):
            run = await engine.store.create_run(new, driver)
        engine.producer.wake()
        if engine.hooks.wants("dispatch_workflow_started"):
            engine.hooks.emit("dispatch_workflow_started", run=run, engine=engine)
        return run

    def _ensure_driver(self) -> None:
        engine = self.engine
        if DRIVER_JOB in engine.jobs:
            return

        async def drive_run(ctx: JobContext, payload: dict[str, Any]) -> None:
            if payload.get("hold"):
                return  # a replayed run's placeholder job: its real driver comes after its history
            await drive(engine, ctx, payload["run_id"])

        # Internal: its payload addresses a run by id, whatever the run's tenant.
        engine.job(name=DRIVER_JOB, max_retries=24, timeout=None, internal=True)(drive_run)
