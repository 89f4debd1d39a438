"""Workflow definitions and run handles."""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from dispatch_core._blocking import run_blocking
from dispatch_core.errors import ConfigurationError
from dispatch_core.serde import from_json_payload, to_json_payload
from dispatch_core.workflows.errors import WorkflowCancelledError, WorkflowFailedError
from dispatch_core.workflows.models import RunState, StepRecord, WorkflowRun
from dispatch_core.workflows.runtime import Workflow, new_driver

if TYPE_CHECKING:
    from dispatch_core.engine import Engine

__all__ = ["WorkflowDefinition", "RunHandle"]

I = TypeVar("I")  # noqa: E741 - the input type
R = TypeVar("R")


def _input_type(fn: Callable[..., Any]) -> tuple[bool, Any]:
    """``(takes_input, input_type)`` of a handler ``(wf, input) -> result``."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise ConfigurationError(f"cannot resolve the type hints of {fn!r}: {exc}") from exc
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not params or len(params) > 2:
        raise ConfigurationError(
            f"workflow handler {fn.__qualname__} must take (wf) or (wf, input), got "
            f"{len(params)} parameters"
        )
    if len(params) == 1:
        return False, None
    return True, hints.get(params[1].name, Any)


class WorkflowDefinition(Generic[I, R]):
    """A registered workflow: ``start`` / ``astart`` begin runs of it.

    Made by ``@engine.workflow``; the handler is ``async def handler(wf, input) -> result``.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        fn: Callable[..., Any],
        name: str,
        version: int,
        queue: str,
        priority: int,
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(
                f"workflow handler {fn.__qualname__} must be an async def (its steps may be "
                "plain functions)"
            )
        if version < 1:
            raise ConfigurationError(f"workflow {name!r}: version must be >= 1, got {version}")
        self.engine = engine
        self.fn = fn
        self.name = name
        self.version = version
        self.queue = queue
        self.priority = priority
        self.takes_input, self.input_type = _input_type(fn)

    def __repr__(self) -> str:
        return f"<WorkflowDefinition {self.name!r} v{self.version}>"

    def _encode_input(self, value: Any) -> Any:
        if not self.takes_input:
            if value is not None:
                raise ConfigurationError(f"workflow {self.name!r} takes no input")
            return None
        return to_json_payload(self.engine.converter, self.name, self.input_type, value)

    async def _invoke(self, wf: Workflow, raw: Any) -> Any:
        if not self.takes_input:
            return await self.fn(wf)
        value = raw
        if self.input_type is not Any:
            value = from_json_payload(self.engine.converter, self.name, self.input_type, raw)
        return await self.fn(wf, value)

    def _driver_job(self, run: WorkflowRun, generation: int, *, run_at: datetime | None) -> Any:
        return new_driver(
            run=run, generation=generation, queue=self.queue, priority=self.priority, run_at=run_at
        )

    async def astart(
        self,
        input: I | None = None,
        *,
        tenant: str | None = None,
        correlation_key: str | None = None,
    ) -> RunHandle[R]:
        """Start a run and return its handle at once; workers execute it.

        Args:
            input: The input, validated against the handler's type now.
            tenant: The run's tenant (events must come from the same one).
            correlation_key: A key events may be addressed to instead of the run id.
        """
        run = await self.engine.workflow_registry.start(
            self, input, tenant=tenant, correlation_key=correlation_key
        )
        return RunHandle(self.engine, run.id)

    def start(
        self,
        input: I | None = None,
        *,
        tenant: str | None = None,
        correlation_key: str | None = None,
    ) -> RunHandle[R]:
        """Blocking twin of :meth:`astart`, for code without an event loop."""
        run = run_blocking(
            self.engine,
            "start",
            "astart",
            lambda: self.engine.workflow_registry.start(
                self, input, tenant=tenant, correlation_key=correlation_key
            ),
        )
        return RunHandle(self.engine, run.id)


class RunHandle(Generic[R]):
    """A started run: its id, and ways to read it and wait for its result."""

    def __init__(self, engine: Engine, run_id: str) -> None:
        self.engine = engine
        self.id = run_id

    def __repr__(self) -> str:
        return f"<RunHandle {self.id}>"

    async def aget(self) -> WorkflowRun:
        """The run as stored now."""
        return await self.engine.aget_run(self.id)

    async def atimeline(self) -> list[StepRecord]:
        """The run's history: its steps, sleeps and waits with timings, attempts, outputs."""
        return await self.engine.atimeline(self.id)

    async def aresult(self, *, timeout: float | None = None, poll: float = 0.05) -> R:
        """Wait for the run to finish and return its output.

        Raises:
            WorkflowFailedError: the run failed (after its compensations ran).
            WorkflowCancelledError: the run was cancelled.
            TimeoutError: ``timeout`` passed first.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            run = await self.engine.aget_run(self.id)
            if run.state is RunState.COMPLETED:
                return typing.cast(R, run.output)
            if run.state is RunState.FAILED:
                raise WorkflowFailedError(run.id, run.error or "")
            if run.state is RunState.CANCELLED:
                raise WorkflowCancelledError(run.id)
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"workflow run {self.id} did not finish within {timeout}s")
            await asyncio.sleep(poll)
