"""Producer and consumer spans: names, kinds, attributes, parent and link, errors, retries."""

from __future__ import annotations

from typing import Any

import pytest
from _otel_helpers import Telemetry, make_engine
from opentelemetry.trace import SpanKind, StatusCode

from dispatch_core import JobContext
from dispatch_core.models import NewJob, utcnow
from dispatch_core.stores import MemoryStore


def hex_id(n: int) -> str:
    return format(n, "032x")


async def test_producer_and_consumer_spans_make_one_trace(telemetry: Telemetry) -> None:
    engine = make_engine(telemetry)

    @engine.job(name="email.send", queue="mail")
    async def send(to: str) -> None:
        return None

    async with engine:
        job = await send.aenqueue("ada@example.com")
        await engine.drain()
    send_span = telemetry.span("send mail")
    process = telemetry.span("process mail")
    assert send_span.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert send_span.parent is None  # nothing was current at enqueue
    # One trace: the consumer is the producer's child, and links to it explicitly.
    assert process.context.trace_id == send_span.context.trace_id
    assert process.parent is not None
    assert process.parent.span_id == send_span.context.span_id
    assert process.parent.is_remote  # it came through the job's headers
    [link] = process.links
    assert link.context.span_id == send_span.context.span_id
    assert link.context.trace_id == send_span.context.trace_id
    stored = await engine.aget_job(job.id)
    assert stored.headers["traceparent"].split("-")[1] == hex_id(send_span.context.trace_id)
    assert send_span.status.status_code is StatusCode.UNSET
    assert process.status.status_code is StatusCode.UNSET


async def test_span_attributes_follow_the_messaging_conventions(telemetry: Telemetry) -> None:
    engine = make_engine(telemetry)

    @engine.job(name="report.build")
    async def build(n: int) -> None:
        return None

    async with engine:
        job = await build.aenqueue(1, tenant="acme")
        worker = engine.worker()
        await worker.drain()
    send_span = telemetry.span("send default")
    assert dict(send_span.attributes or {}) == {
        "messaging.system": "dispatch",
        "messaging.destination.name": "default",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.message.id": job.id,
        "dispatch.job.name": "report.build",
        "dispatch.tenant": "acme",
    }
    process = telemetry.span("process default")
    assert dict(process.attributes or {}) == {
        "messaging.system": "dispatch",
        "messaging.destination.name": "default",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": job.id,
        "messaging.client.id": worker.id,
        "dispatch.job.name": "report.build",
        "dispatch.attempt": 1,
        "dispatch.tenant": "acme",
    }
    assert process.instrumentation_scope is not None
    assert process.instrumentation_scope.name == "dispatch_plugins.otel"


async def test_no_tenant_attribute_without_a_tenant(telemetry: Telemetry) -> None:
    engine = make_engine(telemetry)

    @engine.job(name="plain")
    async def plain() -> None:
        return None

    async with engine:
        await plain.aenqueue()
        await engine.drain()
    for span in telemetry.spans():
        assert "dispatch.tenant" not in (span.attributes or {})


async def test_a_batch_is_one_producer_span_and_every_job_carries_it(
    telemetry: Telemetry,
) -> None:
    engine = make_engine(telemetry)

    @engine.job(name="bulk")
    async def bulk(n: int) -> None:
        return None

    async with engine:
        jobs = await bulk.aenqueue_many([1, 2, 3])
        await engine.drain()
    send_span = telemetry.span("send default")
    attributes = send_span.attributes or {}
    assert attributes["messaging.batch.message_count"] == 3
    assert "messaging.message.id" not in attributes
    processes = telemetry.spans("process default")
    assert len(processes) == 3
    assert {p.attributes["messaging.message.id"] for p in processes if p.attributes} == {
        j.id for j in jobs
    }
    for process in processes:
        assert process.parent is not None
        assert process.parent.span_id == send_span.context.span_id
        assert [link.context.span_id for link in process.links] == [send_span.context.span_id]


async def test_a_failed_attempt_is_an_error_and_each_retry_its_own_span(
    telemetry: Telemetry,
) -> None:
    engine = make_engine(telemetry)

    @engine.job(name="flaky", max_retries=2)
    async def flaky(ctx: JobContext) -> str:
        if ctx.attempt < 3:
            raise ValueError(f"attempt {ctx.attempt} broke")
        return "ok"

    async with engine:
        await flaky.aenqueue()
        await engine.drain(wait_scheduled=True)
    send_span = telemetry.span("send default")
    processes = telemetry.spans("process default")
    assert [p.attributes["dispatch.attempt"] for p in processes if p.attributes] == [1, 2, 3]
    for process in processes:  # every attempt: a child of the one producer span
        assert process.parent is not None
        assert process.parent.span_id == send_span.context.span_id
    failed, again, ok = processes
    for span, n in ((failed, 1), (again, 2)):
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == f"ValueError: attempt {n} broke"
        assert (span.attributes or {})["error.type"] == "ValueError"
        [event] = span.events
        assert event.name == "exception"
        assert (event.attributes or {})["exception.message"] == f"attempt {n} broke"
    assert ok.status.status_code is StatusCode.UNSET
    assert not ok.events


async def test_handler_spans_and_enqueues_are_children_of_the_attempt(
    telemetry: Telemetry,
) -> None:
    engine = make_engine(telemetry)
    tracer = telemetry.tracer_provider.get_tracer("app")

    @engine.job(name="child")
    async def child() -> None:
        return None

    @engine.job(name="parent")
    async def parent() -> None:
        with tracer.start_as_current_span("work"):
            await child.aenqueue(queue="children")

    @engine.job(name="sync.parent")
    def sync_parent() -> None:  # runs in the worker's thread pool
        with tracer.start_as_current_span("sync work"):
            pass

    async with engine:
        await parent.aenqueue()
        await sync_parent.aenqueue(queue="sync")
        await engine.drain()
    process = telemetry.span("process default")
    work = telemetry.span("work")
    assert work.parent is not None
    assert work.parent.span_id == process.context.span_id
    send_child = telemetry.span("send children")
    assert send_child.parent is not None
    assert send_child.parent.span_id == work.context.span_id
    process_child = telemetry.span("process children")
    assert process_child.context.trace_id == process.context.trace_id
    assert process_child.parent is not None
    assert process_child.parent.span_id == send_child.context.span_id
    sync_work = telemetry.span("sync work")
    assert sync_work.parent is not None
    assert sync_work.parent.span_id == telemetry.span("process sync").context.span_id


async def test_enqueue_under_a_request_span_joins_its_trace(telemetry: Telemetry) -> None:
    engine = make_engine(telemetry)
    tracer = telemetry.tracer_provider.get_tracer("web")

    @engine.job(name="hello")
    async def hello() -> None:
        return None

    async with engine:
        with tracer.start_as_current_span("GET /hello", kind=SpanKind.SERVER):
            await hello.aenqueue()
        await engine.drain()
    request = telemetry.span("GET /hello")
    send_span = telemetry.span("send default")
    process = telemetry.span("process default")
    assert send_span.parent is not None
    assert send_span.parent.span_id == request.context.span_id
    assert {s.context.trace_id for s in (request, send_span, process)} == {request.context.trace_id}


def test_sync_enqueue_makes_the_producer_span(telemetry: Telemetry) -> None:
    engine = make_engine(telemetry)

    @engine.job(name="sync.enqueued")
    async def job() -> None:
        return None

    try:
        enqueued = job.enqueue()
    finally:
        engine.close()
    send_span = telemetry.span("send default")
    assert (send_span.attributes or {})["messaging.message.id"] == enqueued.id
    assert hex_id(send_span.context.trace_id) in enqueued.headers["traceparent"]


class BrokenStore(MemoryStore):
    async def enqueue(self, jobs: Any) -> Any:
        raise RuntimeError("disk on fire")


async def test_a_failed_write_ends_the_producer_span_with_an_error(
    telemetry: Telemetry,
) -> None:
    engine = make_engine(telemetry, BrokenStore())

    @engine.job(name="doomed")
    async def doomed() -> None:
        return None

    async with engine:
        with pytest.raises(RuntimeError, match="disk on fire"):
            await doomed.aenqueue()
    send_span = telemetry.span("send default")
    assert send_span.status.status_code is StatusCode.ERROR
    assert (send_span.attributes or {})["error.type"] == "RuntimeError"
    assert [e.name for e in send_span.events] == ["exception"]


async def test_a_cron_trigger_is_a_cron_span(telemetry: Telemetry) -> None:
    engine = make_engine(telemetry)

    @engine.job(name="report")
    async def report(n: int) -> None:
        return None

    engine.schedule("nightly", "0 3 * * *", report, 7)
    async with engine:
        await engine.apply_schedules()
        job = await engine.atrigger_cron("nightly")
        await engine.drain()
    cron = telemetry.span("cron nightly")
    assert cron.kind is SpanKind.PRODUCER
    attributes = dict(cron.attributes or {})
    assert attributes["dispatch.cron.entry"] == "nightly"
    assert "dispatch.cron.tick" not in attributes  # a trigger, not a scheduled tick
    assert attributes["messaging.message.id"] == job.id
    assert attributes["messaging.operation.name"] == "cron"
    process = telemetry.span("process default")
    assert process.parent is not None
    assert process.parent.span_id == cron.context.span_id
    assert not telemetry.spans("send default")


def test_a_scheduled_fire_carries_its_tick(telemetry: Telemetry) -> None:
    assert telemetry.otel.tracing is not None
    now = utcnow()
    job = NewJob(
        id="job_1",
        name="report",
        queue="default",
        payload=None,
        priority=0,
        max_attempts=1,
        timeout=None,
        run_at=now,
        created_at=now,
        headers={"dispatch-cron": "hourly", "dispatch-cron-tick": "2026-01-01T03:00:00+00:00"},
    )
    scope = telemetry.otel.tracing.enqueuing([job])
    assert scope is not None
    with scope:
        pass
    cron = telemetry.span("cron hourly")
    assert (cron.attributes or {})["dispatch.cron.tick"] == "2026-01-01T03:00:00+00:00"
    assert "traceparent" in job.headers
