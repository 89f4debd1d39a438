"""The workflow runtime: a driver job replays a run's handler against its history.

:func:`drive` is the body of the driver job. It loads the run (waking it if its timer is
what woke it), replays the handler from the start with a
:class:`~dispatch_core.workflows.primitives.Workflow` over the run's history, and stores where
the run got to: completed, failed (after its compensations ran), cancelled (compensations
again), or parked by a primitive that must wait, for a later driver job to take it on.

The primitives a handler calls, and how they replay, are in
:mod:`dispatch_core.workflows.primitives`; the driver jobs (name, unique keys) and how a
finished child wakes its parent, in :mod:`dispatch_core.workflows.drivers`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from dispatch_core._tracebacks import format_error
from dispatch_core.context import JobContext
from dispatch_core.middleware import DriveOutcome, DriveResult, RunCall, wrap_call
from dispatch_core.models import utcnow
from dispatch_core.workflows.drivers import (
    DRIVER_JOB,
    cancel_key,
    child_event,
    driver_key,
    generation_of,
    new_driver,
    notify_parent,
)
from dispatch_core.workflows.models import TERMINAL_RUN_STATES, RunState, WorkflowRun
from dispatch_core.workflows.primitives import StepRetry, Workflow, _Cancelled, _Suspend

if TYPE_CHECKING:
    from dispatch_core.engine import Engine

# Workflow, StepRetry and the driver helpers live in their own modules and are re-exported
# here, where the engine, the definitions and the tests have always imported them.
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
        await notify_parent(engine, run)
        return
    generation = generation_of(ctx.job.unique_key)
    if run.state in TERMINAL_RUN_STATES:
        await notify_parent(engine, run)  # again: the driver that finished it may have died
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
    definition = engine.workflow_registry.definition(run.name, run.version)
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
            await notify_parent(engine, failed)
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
        await notify_parent(engine, done)
    if done is not None and engine.hooks.wants("dispatch_workflow_completed"):
        engine.hooks.emit(
            "dispatch_workflow_completed",
            run=done,
            elapsed=time.perf_counter() - t0,
            engine=engine,
        )


async def _run_compensations(engine: Engine, ctx: JobContext, run: WorkflowRun) -> None:
    """Replay a cancelled run up to where it stopped, then run its compensations."""
    definition = engine.workflow_registry.definition(run.name, run.version)
    history = await engine.store.list_steps(run.id)
    wf = Workflow(engine, run, history, definition, ctx, cancelling=True)
    try:
        await definition._invoke(wf, run.input)
    except (_Cancelled, _Suspend):
        pass
    except Exception as exc:  # the replay failed where the run had failed: compensate too
        log.info("run %s: replay of a cancelled run stopped on %s", run.id, exc)
    await wf._compensate()
