"""Workflow spans: a run span per drive under the driver job's span, a step span per attempt,
and one trace across parks."""

from __future__ import annotations

from _otel_helpers import Telemetry, make_engine
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from dispatch_core import RunState, StepRetry, Workflow


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_run_and_step_spans_nest_under_the_driver_job(telemetry: Telemetry) -> None:
    engine = make_engine(telemetry)
    calls = 0

    def fickle() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("flaky network")
        return "charged"

    @engine.workflow(name="order")
    async def order(wf: Workflow, n: int) -> str:
        await wf.step("reserve", lambda: "reserved")
        return await wf.step("charge", fickle, retry=StepRetry(attempts=2, delay=0.01))

    async with engine:
        handle = await order.astart(1)
        await engine.drain(wait_scheduled=True)
        assert await handle.aresult(timeout=1) == "charged"
    send_span = telemetry.span("send default")
    assert (send_span.attributes or {})["dispatch.workflow.run_id"] == handle.id
    process = telemetry.span("process default")
    assert (process.attributes or {})["dispatch.job.name"] == "dispatch.workflow"
    assert (process.attributes or {})["dispatch.workflow.run_id"] == handle.id
    run = telemetry.span("workflow order")
    assert run.kind is SpanKind.INTERNAL
    assert parent_of(run) == process.context.span_id
    assert dict(run.attributes or {}) == {
        "dispatch.workflow.name": "order",
        "dispatch.workflow.run_id": handle.id,
        "dispatch.workflow.version": 1,
        "dispatch.workflow.outcome": "completed",
    }
    reserve = telemetry.span("step reserve")
    charges = telemetry.spans("step charge")
    assert len(charges) == 2
    for step in (reserve, *charges):
        assert step.kind is SpanKind.INTERNAL
        assert parent_of(step) == run.context.span_id
        assert step.context.trace_id == send_span.context.trace_id
    assert (reserve.attributes or {})["dispatch.workflow.step"] == "reserve"
    first, second = charges
    assert (first.attributes or {})["dispatch.workflow.step.attempt"] == 1
    assert first.status.status_code is StatusCode.ERROR
    assert (first.attributes or {})["error.type"] == "ConnectionError"
    assert (second.attributes or {})["dispatch.workflow.step.attempt"] == 2
    assert second.status.status_code is StatusCode.UNSET


async def test_a_parked_run_stays_one_trace(telemetry: Telemetry) -> None:
    engine = make_engine(telemetry)

    @engine.workflow(name="napper")
    async def napper(wf: Workflow) -> str:
        await wf.step("before", lambda: 1)
        await wf.sleep("nap", 0.05)
        await wf.step("after", lambda: 2)
        return "rested"

    async with engine:
        handle = await napper.astart()
        await engine.drain(wait_scheduled=True)
        assert (await handle.aget()).state is RunState.COMPLETED
    drives = telemetry.spans("workflow napper")
    assert [(d.attributes or {})["dispatch.workflow.outcome"] for d in drives] == [
        "suspended",
        "completed",
    ]
    sends = telemetry.spans("send default")
    processes = telemetry.spans("process default")
    assert len(sends) == len(processes) == 2
    assert len({s.context.trace_id for s in telemetry.spans()}) == 1
    # The wake-up job was enqueued inside the first drive; its attempt drives the run on.
    first_drive, second_drive = drives
    wake_up = next(s for s in sends if s.parent is not None)
    assert wake_up.context.trace_id == first_drive.context.trace_id
    assert parent_of(processes[1]) == wake_up.context.span_id
    assert parent_of(second_drive) == processes[1].context.span_id
    assert parent_of(telemetry.span("step after")) == second_drive.context.span_id


async def test_a_failed_run_marks_its_drive_span(telemetry: Telemetry) -> None:
    engine = make_engine(telemetry)

    def refuse() -> None:
        raise PermissionError("card declined")

    @engine.workflow(name="doomed")
    async def doomed(wf: Workflow) -> None:
        await wf.step("charge", refuse, retry=StepRetry(attempts=1))

    async with engine:
        handle = await doomed.astart()
        await engine.drain(wait_scheduled=True)
        assert (await handle.aget()).state is RunState.FAILED
    run = telemetry.span("workflow doomed")
    assert (run.attributes or {})["dispatch.workflow.outcome"] == "failed"
    assert run.status.status_code is StatusCode.ERROR
    assert "exception" in [e.name for e in run.events]
    step = telemetry.span("step charge")
    assert step.status.status_code is StatusCode.ERROR
    assert (step.attributes or {})["error.type"] == "PermissionError"
    # The driver job itself completed: the run's failure is the run's, not the job's.
    assert telemetry.span("process default").status.status_code is StatusCode.UNSET
