"""The workflow runtime: a driver job replays a run's handler against its history.

Every primitive a handler calls (``wf.step``, ``wf.sleep``, ``wf.wait_for_event``...) takes the
next sequence number, in call order. A replay finds the finished record of that number and
returns its result without running anything; the first number without one is where the run
really goes on. A primitive that must wait (a sleep, an event) saves a pending record, parks
the run in the store with a wake-up job, and unwinds the handler with :class:`_Suspend`; the
wake-up job replays the handler from the start, fast, up to that point.
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
from dispatch_core.middleware import DriveOutcome, DriveResult, RunCall, StepCall, wrap_call
from dispatch_core.models import NewJob, utcnow
from dispatch_core.workflows.errors import (
    ChildWorkflowFailedError,
    EventTimeoutError,
    NonDeterminismError,
    StepFailedError,
    WorkflowError,
)
from dispatch_core.workflows.models import (
    TERMINAL_RUN_STATES,
    NewEvent,
    RunState,
    StepKind,
    StepRecord,
    StepState,
    WorkflowRun,
)

if TYPE_CHECKING:
    from dispatch_core.engine import Engine
    from dispatch_core.workflows.definition import WorkflowDefinition

__all__ = [
    "Workflow",
    "StepRetry",
    "drive",
    "driver_key",
    "cancel_key",
    "child_event",
    "new_driver",
    "DRIVER_JOB",
]

log = logging.getLogger("dispatch_core.workflows")

#: The job that drives runs: its payload is ``{"run_id": ...}``.
DRIVER_JOB = "dispatch.workflow"


def driver_key(run_id: str, generation: int) -> str:
    """The unique key of the job that drives park ``generation`` of a run."""
    return f"wf:{run_id}:{generation}"


def _generation_of(key: str | None) -> int | None:
    if key is None or not key.startswith("wf:"):
        return None
    try:
        return int(key.rsplit(":", 1)[1])
    except ValueError:
        return None


class _Suspend(BaseException):
    """Unwinds a handler whose run was parked (a BaseException: ``except Exception`` in user
    code must not swallow it)."""


class _Cancelled(BaseException):
    """Unwinds a handler whose run was cancelled; its compensations run next."""


def cancel_key(run_id: str) -> str:
    """The unique key of the job that runs a cancelled run's compensations."""
    return f"wf:{run_id}:cancel"


def child_event(child_run_id: str) -> str:
    """The internal event a child run sends its parent when it finishes (the parent waits
    for it in ``wf.child``)."""
    return f"child:{child_run_id}"


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
        with self.engine._producing((driver,) if driver is not None else ()):
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
            await self.engine._astart(
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


async def _notify_parent(engine: Engine, run: WorkflowRun) -> None:
    """Tell the parent of a finished child run, by the event ``child:<run id>``, so that a
    parent parked in ``wf.child`` wakes. Sent each time a driver sees the child finished
    (a crash after the child's last write must not lose it); extra copies are never read."""
    if run.parent_run_id is None:
        return
    store = engine.store
    try:
        parent = await store.get_run(run.parent_run_id)
    except RunNotFoundError:
        return
    if parent.state in TERMINAL_RUN_STATES:
        return
    queue, priority = engine._driver_options(parent)
    now = utcnow()
    driver = new_driver(
        run=parent, generation=parent.generation, queue=queue, priority=priority, run_at=None
    )
    with engine._producing((driver,)):
        woken = await store.send_event(
            NewEvent(
                id=new_id("evt"),
                run_id=parent.id,
                name=child_event(run.id),
                payload={"state": run.state.value},
                created_at=now,
                tenant=parent.tenant,
            ),
            driver=driver,
            now=now,
        )
    if woken:
        engine._wake_workers()


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None) -> Any:
    if inspect.iscoroutinefunction(fn):
        coro = fn(*args)
        return await (asyncio.wait_for(coro, timeout) if timeout is not None else coro)
    result = await asyncio.to_thread(fn, *args)
    if inspect.isawaitable(result):
        return await result
    return result


async def drive(engine: Engine, ctx: JobContext, run_id: str) -> None:
    """The driver job's body: replay the run ``run_id`` and take it as far as it goes."""
    store = engine.store
    run = await store.get_run(run_id)
    if ctx.job.tenant != run.tenant:
        # Driver keys are unique per tenant, so a job of another tenant could carry a run's
        # key: only a driver of the run's own tenant may drive it.
        log.warning(
            "run %s: ignoring driver job %s of another tenant (%r, the run's is %r)",
            run_id,
            ctx.job.id,
            ctx.job.tenant,
            run.tenant,
        )
        return
    cancelling = run.state is RunState.CANCELLED and ctx.job.unique_key == cancel_key(run_id)
    if cancelling:
        await _run_compensations(engine, ctx, run)
        await _notify_parent(engine, run)
        return
    generation = _generation_of(ctx.job.unique_key)
    if run.state in TERMINAL_RUN_STATES:
        await _notify_parent(engine, run)  # again: the driver that finished it may have died
        return
    if generation is not None and generation != run.generation:
        log.debug("run %s: stale driver (park %s, run at %s)", run_id, generation, run.generation)
        return
    if run.state is not RunState.RUNNING:
        # Woken by its timer (an event wake sets running itself).
        woken = await store.update_run(
            run_id,
            state=RunState.RUNNING,
            now=utcnow(),
            expect=frozenset({run.state}),
            generation=run.generation,
            wake_at=run.wake_at,
            waiting_for=run.waiting_for,
        )
        if woken is None:
            # An event woke it meanwhile (state running, same park): this job is still the
            # one driver of this park, since the wake-up reused its unique key.
            run = await store.get_run(run_id)
            if run.state is not RunState.RUNNING or run.generation != generation:
                return
        else:
            run = woken
    definition = engine._workflow_definition(run.name, run.version)
    history = await store.list_steps(run_id)
    wf = Workflow(engine, run, history, definition, ctx)
    t0 = time.perf_counter()
    output: Any = None

    async def invoke(_call: RunCall) -> DriveResult:
        nonlocal output
        try:
            value = await definition._invoke(wf, run.input)
            output = engine.converter.unstructure(value)
            json.dumps(output)
        except _Suspend:
            return DriveResult(outcome=DriveOutcome.SUSPENDED)
        except _Cancelled:
            return DriveResult(outcome=DriveOutcome.CANCELLED)
        except Exception as exc:
            return DriveResult(outcome=DriveOutcome.FAILED, error=format_error(exc), exception=exc)
        return DriveResult(outcome=DriveOutcome.COMPLETED)

    run_mw = engine.middleware.run_middleware()
    call = RunCall(run=run, ctx=ctx)
    result = await (wrap_call(run_mw, call, invoke) if run_mw else invoke(call))
    if result.outcome is DriveOutcome.SUSPENDED:
        return
    if result.outcome is DriveOutcome.CANCELLED:
        await wf._compensate()
        return
    if result.outcome is DriveOutcome.FAILED:
        error = result.error or ""
        exc = result.exception
        await wf._compensate()
        failed = await store.update_run(
            run_id,
            state=RunState.FAILED,
            now=utcnow(),
            expect=frozenset({RunState.RUNNING}),
            error=error,
        )
        if failed is not None:
            await _notify_parent(engine, failed)
        if failed is not None and engine.hooks.wants("dispatch_workflow_failed"):
            engine.hooks.emit("dispatch_workflow_failed", run=failed, error=error, engine=engine)
        log.warning("workflow run %s (%s) failed: %s", run_id, run.name, exc or error)
        return
    done = await store.update_run(
        run_id,
        state=RunState.COMPLETED,
        now=utcnow(),
        expect=frozenset({RunState.RUNNING}),
        output=output,
    )
    if done is not None:
        await _notify_parent(engine, done)
    if done is not None and engine.hooks.wants("dispatch_workflow_completed"):
        engine.hooks.emit(
            "dispatch_workflow_completed",
            run=done,
            elapsed=time.perf_counter() - t0,
            engine=engine,
        )


async def _run_compensations(engine: Engine, ctx: JobContext, run: WorkflowRun) -> None:
    """Replay a cancelled run up to where it stopped, then run its compensations."""
    definition = engine._workflow_definition(run.name, run.version)
    history = await engine.store.list_steps(run.id)
    wf = Workflow(engine, run, history, definition, ctx, cancelling=True)
    try:
        await definition._invoke(wf, run.input)
    except (_Cancelled, _Suspend):
        pass
    except Exception as exc:  # the replay failed where the run had failed: compensate too
        log.info("run %s: replay of a cancelled run stopped on %s", run.id, exc)
    await wf._compensate()


def new_driver(
    *,
    run: WorkflowRun,
    generation: int,
    queue: str,
    priority: int,
    run_at: datetime | None,
    now: datetime | None = None,
    unique_key: str | None = None,
) -> NewJob:
    """The driver job of park ``generation`` of ``run`` (or with ``unique_key``)."""
    now = now or utcnow()
    return NewJob(
        id=new_id("job"),
        name=DRIVER_JOB,
        queue=queue,
        payload={"run_id": run.id},
        priority=priority,
        max_attempts=25,  # a driver that fails (store outage) tries again; steps are checkpointed
        timeout=None,
        run_at=run_at or now,
        created_at=now,
        unique_key=unique_key or driver_key(run.id, generation),
        tenant=run.tenant,
    )
