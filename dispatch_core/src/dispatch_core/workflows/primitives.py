"""What a workflow handler calls: :class:`Workflow` (its ``wf``) with its durable primitives
(steps, parallel steps, sleeps, events, child runs) and the saga compensations, and
:class:`StepRetry`.

Every primitive takes the next sequence number, in call order. A replay finds the finished
record of that number and returns its result without running anything; the first number
without one is where the run really goes on. A primitive that must wait (a sleep, an event, a
child) saves a pending record, parks the run in the store with a wake-up job, and unwinds the
handler with :class:`_Suspend`. :mod:`dispatch_core.workflows.runtime` drives the handler.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import attrs

from dispatch_core._ids import new_id
from dispatch_core._tracebacks import format_error
from dispatch_core.context import JobContext
from dispatch_core.errors import RunNotFoundError
from dispatch_core.middleware import StepCall, wrap_call
from dispatch_core.models import utcnow
from dispatch_core.workflows.drivers import child_event
from dispatch_core.workflows.errors import (
    ChildWorkflowFailedError,
    EventTimeoutError,
    NonDeterminismError,
    StepFailedError,
    WorkflowError,
)
from dispatch_core.workflows.models import (
    TERMINAL_RUN_STATES,
    RunState,
    StepKind,
    StepRecord,
    StepState,
    WorkflowRun,
)

if TYPE_CHECKING:
    from dispatch_core.engine import Engine
    from dispatch_core.workflows.definition import WorkflowDefinition

__all__ = ["Workflow", "StepRetry"]

log = logging.getLogger("dispatch_core.workflows")


class _Suspend(BaseException):
    """Unwinds a handler whose run was parked (a BaseException: ``except Exception`` in user
    code must not swallow it)."""


class _Cancelled(BaseException):
    """Unwinds a handler whose run was cancelled; its compensations run next."""


@attrs.frozen(kw_only=True)
class StepRetry:
    """How a step retries inside its driver job.

    Attributes:
        attempts: Attempts in all (1: no retry).
        delay: Seconds before the first retry; doubles each time, up to ``max_delay``.
        max_delay: Longest wait between two attempts.
    """

    attempts: int = 3
    delay: float = 1.0
    max_delay: float = 30.0

    def wait(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.delay * 2 ** (attempt - 1), self.max_delay))


NO_RETRY = StepRetry(attempts=1)


class Workflow:
    """What a workflow handler receives as ``wf``: the durable primitives of its run.

    Call the primitives in the same order every time the handler runs (branch only on the
    input and on step results): a replay matches each call to its history by position and
    raises :class:`NonDeterminismError` when they differ.
    """

    def __init__(
        self,
        engine: Engine,
        run: WorkflowRun,
        history: Sequence[StepRecord],
        definition: WorkflowDefinition[Any, Any],
        ctx: JobContext,
        *,
        cancelling: bool = False,
    ) -> None:
        self.engine = engine
        self._cancelling = cancelling
        self.run = run
        self.ctx = ctx
        self._definition = definition
        self._history = {r.seq: r for r in history}
        self._seq = 0
        self._names: set[str] = set()
        #: Compensations of completed steps, in completion order: (step name, fn, output).
        self._compensations: list[tuple[str, Callable[..., Any], Any]] = []
        self._step_mw = engine.middleware.step_middleware()

    @property
    def run_id(self) -> str:
        """The run's id (``wfrun_…``)."""
        return self.run.id

    @property
    def tenant(self) -> str | None:
        """The run's tenant."""
        return self.run.tenant

    # -- bookkeeping -------------------------------------------------------------------------------

    def _take(self, name: str, kind: StepKind) -> tuple[int, StepRecord | None]:
        if not isinstance(name, str) or not name:
            raise WorkflowError(f"a workflow {kind.value} needs a non-empty name, got {name!r}")
        if name in self._names:
            raise WorkflowError(
                f"workflow run {self.run.id!r} uses the name {name!r} twice; each step, sleep "
                "and wait of a run needs its own name (add an index in loops: f'charge-{i}')"
            )
        self._names.add(name)
        seq = self._seq
        self._seq += 1
        record = self._history.get(seq)
        if record is not None and (record.name != name or record.kind is not kind):
            raise NonDeterminismError(
                self.run.id,
                seq,
                f"{record.kind.value} {record.name!r}",
                f"{kind.value} {name!r}",
            )
        if self._cancelling and (record is None or record.state is StepState.PENDING):
            raise _Cancelled  # the replay reached where the run stopped: compensate
        return seq, record

    async def _save(self, record: StepRecord) -> StepRecord:
        stored = await self.engine.store.save_step(self.run.id, record, now=utcnow())
        self._history[stored.seq] = stored
        return stored

    async def _park(
        self, state: RunState, *, wake_at: datetime | None, waiting_for: str | None
    ) -> bool:
        """Park the run with a wake-up job at ``wake_at`` (if any); False when the store
        refused (an awaited event has already arrived)."""
        generation = self.run.generation + 1
        driver = (
            self._definition._driver_job(self.run, generation, run_at=wake_at)
            if wake_at is not None
            else None
        )
        with self.engine.producer.scope((driver,) if driver is not None else ()):
            parked = await self.engine.store.update_run(
                self.run.id,
                state=state,
                now=utcnow(),
                expect=frozenset({RunState.RUNNING}),
                generation=self.run.generation,
                wake_at=wake_at,
                waiting_for=waiting_for,
                driver=driver,
            )
        if parked is None:
            current = await self.engine.store.get_run(self.run.id)
            if current.state is RunState.RUNNING and current.generation == self.run.generation:
                return False  # the awaited event is already here
            # Cancelled (the cancel job compensates) or parked by another driver: stop here.
            raise _Suspend
        self.run = parked
        return True

    # -- steps -------------------------------------------------------------------------------------

    def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retry: StepRetry = NO_RETRY,
        timeout: float | None = None,
        compensate: Callable[..., Any] | None = None,
    ) -> Awaitable[Any]:
        """Run ``fn(*args)`` once for the run and checkpoint its result (JSON).

        On a replay a completed step returns its recorded result without running. ``fn`` may
        be ``async def`` or a plain function (run in a thread).

        Args:
            name: The step's name, unique in the run.
            fn: The work.
            args: Its arguments.
            retry: Attempts and waits within this driver job (default: one attempt).
            timeout: Seconds an attempt of an async ``fn`` may take.
            compensate: Called as ``compensate(result)`` if the workflow fails after this
                step completed (saga); compensations run in reverse order, each checkpointed.

        Raises:
            StepFailedError: every attempt failed.
        """
        seq, record = self._take(name, StepKind.STEP)
        return self._step(seq, record, name, fn, args, retry, timeout, compensate)

    async def _step(
        self,
        seq: int,
        record: StepRecord | None,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        retry: StepRetry,
        timeout: float | None,
        compensate: Callable[..., Any] | None,
    ) -> Any:
        if record is None or record.state is StepState.PENDING:
            # A new step: stop here if the run was cancelled meanwhile.
            current = await self.engine.store.get_run(self.run.id)
            if current.state is RunState.CANCELLED:
                raise _Cancelled
            record = await self._execute(seq, name, fn, args, retry, timeout)
        if record.state is StepState.FAILED:
            raise StepFailedError(name, record.error or "")
        if compensate is not None:
            self._compensations.append((name, compensate, record.output))
        return record.output

    async def _execute(
        self,
        seq: int,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        retry: StepRetry,
        timeout: float | None,
    ) -> StepRecord:
        hooks = self.engine.hooks
        started = utcnow()
        t0 = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                if self._step_mw:
                    value = await wrap_call(
                        self._step_mw,
                        StepCall(run=self.run, name=name, attempt=attempt, ctx=self.ctx),
                        lambda _call_: _call(fn, args, timeout),
                    )
                else:
                    value = await _call(fn, args, timeout)
                output = self.engine.converter.unstructure(value)
                json.dumps(output)  # checkpoints are JSON: refuse anything else now
            except Exception as exc:
                error = format_error(exc)
                if attempt < retry.attempts:
                    log.info(
                        "run %s step %s attempt %d failed: %s", self.run.id, name, attempt, exc
                    )
                    await asyncio.sleep(retry.wait(attempt))
                    continue
                stored = await self._save(
                    StepRecord(
                        seq=seq,
                        name=name,
                        kind=StepKind.STEP,
                        state=StepState.FAILED,
                        started_at=started,
                        finished_at=utcnow(),
                        error=error,
                        attempts=attempt,
                    )
                )
                if hooks.wants("dispatch_workflow_step_failed"):
                    hooks.emit(
                        "dispatch_workflow_step_failed",
                        run=self.run,
                        step_name=name,
                        error=error,
                        engine=self.engine,
                    )
                return stored
            stored = await self._save(
                StepRecord(
                    seq=seq,
                    name=name,
                    kind=StepKind.STEP,
                    state=StepState.COMPLETED,
                    started_at=started,
                    finished_at=utcnow(),
                    output=output,
                    attempts=attempt,
                )
            )
            if hooks.wants("dispatch_workflow_step_completed"):
                hooks.emit(
                    "dispatch_workflow_step_completed",
                    run=self.run,
                    step_name=name,
                    elapsed=time.perf_counter() - t0,
                    engine=self.engine,
                )
            return stored

    async def parallel(self, *steps: Awaitable[Any]) -> list[Any]:
        """Await several steps at once (fan-out, fan-in) and return their results in order.

        Pass what ``wf.step(...)`` returns, without awaiting it::

            a, b = await wf.parallel(wf.step("a", fetch_a), wf.step("b", fetch_b))

        If one fails, the others are cancelled (a cancelled step runs again on a replay) and
        the failure is raised.
        """
        tasks = [asyncio.ensure_future(s) for s in steps]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def map(
        self,
        name: str,
        fn: Callable[[Any], Any],
        items: Sequence[Any],
        *,
        retry: StepRetry = NO_RETRY,
        timeout: float | None = None,
    ) -> list[Any]:
        """Run ``fn(item)`` for each item as steps ``name[0]``, ``name[1]``... in parallel."""
        return await self.parallel(
            *(
                self.step(f"{name}[{i}]", fn, item, retry=retry, timeout=timeout)
                for i, item in enumerate(items)
            )
        )

    # -- durable timers ----------------------------------------------------------------------------

    async def sleep(self, name: str, duration: float | timedelta) -> None:
        """Wait ``duration`` durably: the run is parked in the store and a job wakes it; a
        crash or a deploy meanwhile neither restarts nor shortens the wait."""
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
        seq, record = self._take(name, StepKind.SLEEP)
        if record is None:
            await self._sleep(seq, name, utcnow() + timedelta(seconds=max(seconds, 0.0)), None)
        else:
            await self._sleep(seq, name, record.wake_at or utcnow(), record)

    async def sleep_until(self, name: str, when: datetime) -> None:
        """Wait durably until ``when`` (timezone-aware)."""
        if when.tzinfo is None:
            raise WorkflowError(f"sleep_until({name!r}) needs a timezone-aware datetime")
        seq, record = self._take(name, StepKind.SLEEP)
        await self._sleep(seq, name, record.wake_at if record and record.wake_at else when, record)

    async def _sleep(
        self, seq: int, name: str, wake_at: datetime, record: StepRecord | None
    ) -> None:
        if record is not None and record.state is StepState.COMPLETED:
            return
        now = utcnow()
        if wake_at <= now:
            await self._save(
                StepRecord(
                    seq=seq,
                    name=name,
                    kind=StepKind.SLEEP,
                    state=StepState.COMPLETED,
                    started_at=record.started_at if record else now,
                    finished_at=now,
                    wake_at=wake_at,
                )
            )
            return
        if record is None:
            await self._save(
                StepRecord(
                    seq=seq,
                    name=name,
                    kind=StepKind.SLEEP,
                    state=StepState.PENDING,
                    started_at=now,
                    wake_at=wake_at,
                )
            )
        await self._park(RunState.SLEEPING, wake_at=wake_at, waiting_for=None)
        raise _Suspend

    # -- events ------------------------------------------------------------------------------------

    async def wait_for_event(self, name: str, *, timeout: float | timedelta | None = None) -> Any:
        """Wait durably for the event ``name`` sent to this run (``engine.asend_event``) and
        return its payload.

        Raises:
            EventTimeoutError: ``timeout`` passed first (the timeout is durable too).
        """
        seq, record = self._take(name, StepKind.EVENT)
        if record is not None and record.state is StepState.COMPLETED:
            return record.output
        if record is not None and record.state is StepState.FAILED:
            raise EventTimeoutError(name)
        now = utcnow()
        if record is not None:
            deadline = record.wake_at
        elif timeout is None:
            deadline = None
        else:
            seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
            deadline = now + timedelta(seconds=max(seconds, 0.0))
        started = record.started_at if record else now
        while True:
            event = await self.engine.store.take_event(self.run.id, name, seq=seq, now=utcnow())
            if event is not None:
                await self._save(
                    StepRecord(
                        seq=seq,
                        name=name,
                        kind=StepKind.EVENT,
                        state=StepState.COMPLETED,
                        started_at=started,
                        finished_at=utcnow(),
                        output=event.payload,
                        wake_at=deadline,
                    )
                )
                return event.payload
            if deadline is not None and deadline <= utcnow():
                await self._save(
                    StepRecord(
                        seq=seq,
                        name=name,
                        kind=StepKind.EVENT,
                        state=StepState.FAILED,
                        started_at=started,
                        finished_at=utcnow(),
                        error=f"EventTimeoutError: no event {name!r} before {deadline}",
                        wake_at=deadline,
                    )
                )
                raise EventTimeoutError(name)
            if record is None:
                record = await self._save(
                    StepRecord(
                        seq=seq,
                        name=name,
                        kind=StepKind.EVENT,
                        state=StepState.PENDING,
                        started_at=started,
                        wake_at=deadline,
                    )
                )
            if await self._park(RunState.WAITING, wake_at=deadline, waiting_for=name):
                raise _Suspend
            # The event arrived between our look and the park: take it.

    # -- child runs --------------------------------------------------------------------------------

    def child(
        self,
        workflow: WorkflowDefinition[Any, Any] | str,
        input: Any = None,
        *,
        name: str,
    ) -> Awaitable[Any]:
        """Start a run of ``workflow`` as a child of this run (same tenant), wait durably for
        it to finish, and return its output.

        The child is started once per ``name``, however often this run replays (its id is
        checkpointed before it is created); meanwhile this run is parked as ``waiting`` and
        the child's end wakes it. Awaitables of several ``wf.child`` calls may be given to
        :meth:`parallel`.

        Raises:
            ChildWorkflowFailedError: the child failed or was cancelled.
        """
        seq, record = self._take(name, StepKind.CHILD)
        return self._child(seq, record, name, workflow, input, wait=True)

    def spawn(
        self,
        workflow: WorkflowDefinition[Any, Any] | str,
        input: Any = None,
        *,
        name: str,
    ) -> Awaitable[str]:
        """Start a run of ``workflow`` as a child of this run (same tenant), once per
        ``name``, without waiting for it; return its run id."""
        seq, record = self._take(name, StepKind.CHILD)
        return cast(Awaitable[str], self._child(seq, record, name, workflow, input, wait=False))

    async def _child(
        self,
        seq: int,
        record: StepRecord | None,
        name: str,
        workflow: WorkflowDefinition[Any, Any] | str,
        input: Any,
        *,
        wait: bool,
    ) -> Any:
        if record is None or record.state is StepState.PENDING:
            record = await self._start_child(seq, record, name, workflow, input)
        child_id = _child_id(record)
        if not wait:
            if record.state is StepState.PENDING:
                record = await self._save(attrs.evolve(record, state=StepState.COMPLETED))
            return child_id
        if record.state is StepState.PENDING:
            record = await self._await_child(seq, record, child_id)
        if record.state is StepState.FAILED:
            raise ChildWorkflowFailedError(name, child_id, record.error or "")
        output = record.output
        return output.get("output") if isinstance(output, dict) else None

    async def _start_child(
        self,
        seq: int,
        record: StepRecord | None,
        name: str,
        workflow: WorkflowDefinition[Any, Any] | str,
        input: Any,
    ) -> StepRecord:
        """Make sure the child run of ``record`` exists: checkpoint its id first (a pending
        record), then create it; a replay after a crash between the two creates it then."""
        store = self.engine.store
        if record is None:
            current = await store.get_run(self.run.id)
            if current.state is RunState.CANCELLED:
                raise _Cancelled
            record = await self._save(
                StepRecord(
                    seq=seq,
                    name=name,
                    kind=StepKind.CHILD,
                    state=StepState.PENDING,
                    started_at=utcnow(),
                    output={"run_id": new_id("wfrun")},
                )
            )
            if record.state is not StepState.PENDING:
                return record  # another driver finished it meanwhile
        child_id = _child_id(record)
        try:
            await store.get_run(child_id)
        except RunNotFoundError:
            wf_name = workflow if isinstance(workflow, str) else workflow.name
            definition = self.engine.workflows.get(wf_name)
            if definition is None:
                raise WorkflowError(
                    f"workflow {wf_name!r} is not registered in this process"
                ) from None
            await self.engine.workflow_registry.start(
                definition,
                input,
                tenant=self.run.tenant,
                correlation_key=None,
                run_id=child_id,
                parent_run_id=self.run.id,
            )
        return record

    async def _await_child(self, seq: int, record: StepRecord, child_id: str) -> StepRecord:
        """Wait (parked) until the child run ``child_id`` is finished; record its end."""
        store = self.engine.store
        event = child_event(child_id)
        while True:
            child = await store.get_run(child_id)
            if child.state in TERMINAL_RUN_STATES:
                await store.take_event(self.run.id, event, seq=seq, now=utcnow())
                if child.state is RunState.COMPLETED:
                    return await self._save(
                        attrs.evolve(
                            record,
                            state=StepState.COMPLETED,
                            finished_at=utcnow(),
                            output={"run_id": child_id, "output": child.output},
                        )
                    )
                error = (
                    child.error
                    if child.state is RunState.FAILED and child.error
                    else f"WorkflowCancelledError: workflow run {child_id!r} was "
                    f"{child.state.value}"
                )
                return await self._save(
                    attrs.evolve(record, state=StepState.FAILED, finished_at=utcnow(), error=error)
                )
            if await self._park(RunState.WAITING, wake_at=None, waiting_for=event):
                raise _Suspend
            # The child ended between our look and the park: look again.

    # -- compensation ------------------------------------------------------------------------------

    async def _compensate(self) -> None:
        """Run the compensations of completed steps, newest first, each checkpointed once."""
        self._cancelling = False
        for name, fn, output in reversed(self._compensations):
            seq, record = self._take(f"compensate:{name}", StepKind.COMPENSATION)
            if record is not None and record.state is not StepState.PENDING:
                continue
            started = utcnow()
            try:
                await _call(fn, (output,), None)
            except Exception as exc:
                log.error("run %s: compensation of %s failed: %s", self.run.id, name, exc)
                await self._save(
                    StepRecord(
                        seq=seq,
                        name=f"compensate:{name}",
                        kind=StepKind.COMPENSATION,
                        state=StepState.FAILED,
                        started_at=started,
                        finished_at=utcnow(),
                        error=format_error(exc),
                    )
                )
                continue
            await self._save(
                StepRecord(
                    seq=seq,
                    name=f"compensate:{name}",
                    kind=StepKind.COMPENSATION,
                    state=StepState.COMPLETED,
                    started_at=started,
                    finished_at=utcnow(),
                )
            )


def _child_id(record: StepRecord) -> str:
    output = record.output
    if not isinstance(output, dict) or not isinstance(output.get("run_id"), str):
        raise WorkflowError(f"history record {record.name!r} holds no child run id")
    return cast(str, output["run_id"])


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None) -> Any:
    if inspect.iscoroutinefunction(fn):
        coro = fn(*args)
        return await (asyncio.wait_for(coro, timeout) if timeout is not None else coro)
    result = await asyncio.to_thread(fn, *args)
    if inspect.isawaitable(result):
        return await result
    return result
