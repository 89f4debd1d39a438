"""The extension points tracing and webhook plugins build on: the producer hook
(``dispatch_job_enqueuing``), ``dispatch_register_jobs``, and run / step middleware."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from dispatch_core import Engine, JobContext, StepRetry, Workflow, hookimpl
from dispatch_core.middleware import (
    DriveOutcome,
    DriveResult,
    RunCall,
    StepCall,
)
from dispatch_core.models import NewJob
from dispatch_core.stores import MemoryStore

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


class Stamper:
    """Stamps the caller's request id on each job and records the order of events."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.log: list[str] = []
        self.threads: list[int] = []

    @hookimpl
    def dispatch_job_enqueuing(self, jobs: Sequence[NewJob]) -> Any:
        self.calls.append(tuple(j.name for j in jobs))
        self.threads.append(threading.get_ident())
        for job in jobs:
            job.headers["x-request-id"] = request_id.get()

        @contextmanager
        def around() -> Iterator[None]:
            self.log.append("enter")
            try:
                yield
            except BaseException as exc:
                self.log.append(f"error:{type(exc).__name__}")
                raise
            self.log.append("exit")

        return around()


def make_engine(*plugins: object) -> Engine:
    return Engine(MemoryStore(), load_entrypoints=False, plugins=plugins)


async def test_producer_hook_stamps_headers_that_the_worker_sees() -> None:
    stamper = Stamper()
    engine = make_engine(stamper)
    seen: list[dict[str, str]] = []

    @engine.job(name="greet")
    async def greet(ctx: JobContext, who: str) -> None:
        seen.append(dict(ctx.job.headers))

    token = request_id.set("req-42")
    try:
        job = await greet.aenqueue("ada", headers={"keep": "me"})
    finally:
        request_id.reset(token)
    assert job.headers == {"keep": "me", "x-request-id": "req-42"}
    assert (await engine.aget_job(job.id)).headers["x-request-id"] == "req-42"
    assert stamper.log == ["enter", "exit"]
    await engine.drain()
    assert seen == [{"keep": "me", "x-request-id": "req-42"}]


async def test_a_batch_is_one_call_and_nothing_is_called_without_plugins() -> None:
    stamper = Stamper()
    engine = make_engine(stamper)

    @engine.job(name="n")
    async def n(x: int) -> None: ...

    jobs = await n.aenqueue_many([1, 2, 3])
    assert stamper.calls == [("n", "n", "n")]
    assert all(j.headers == {"x-request-id": "none"} for j in jobs)

    bare = make_engine()
    assert bare.producer.hooked is False
    bare.register_plugin(Stamper())
    assert bare.producer.hooked is True


def test_sync_enqueue_runs_the_hook_in_the_caller_s_thread_and_context() -> None:
    stamper = Stamper()
    engine = make_engine(stamper)

    @engine.job(name="s")
    def s() -> None: ...

    token = request_id.set("sync-req")
    try:
        job = s.enqueue()
    finally:
        request_id.reset(token)
        engine.close()
    assert job.headers["x-request-id"] == "sync-req"
    assert stamper.threads == [threading.get_ident()]


async def test_the_context_manager_sees_a_failed_write() -> None:
    stamper = Stamper()
    engine = make_engine(stamper)

    @engine.job(name="w")
    async def w() -> None: ...

    await engine.aopen()

    async def broken(jobs: Any) -> Any:
        raise RuntimeError("disk on fire")

    engine.store.enqueue = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="disk on fire"):
        await w.aenqueue()
    assert stamper.log == ["enter", "error:RuntimeError"]


async def test_a_failing_producer_plugin_never_stops_an_enqueue(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        @hookimpl
        def dispatch_job_enqueuing(self) -> None:
            raise ValueError("plugin bug")

    stamper = Stamper()
    engine = make_engine(Broken(), stamper)

    @engine.job(name="x")
    async def x() -> None: ...

    with caplog.at_level(logging.ERROR, logger="dispatch_core.engine"):
        job = await x.aenqueue()
    assert job.headers == {"x-request-id": "none"}  # the other plugin still ran
    assert "plugin bug" in caplog.text


async def test_cron_fires_and_workflow_drivers_go_through_the_producer_hook() -> None:
    stamper = Stamper()
    engine = make_engine(stamper)

    @engine.job(name="report")
    async def report() -> None: ...

    @engine.workflow(name="nap")
    async def nap(wf: Workflow) -> str:
        await wf.sleep("short", 0.05)
        return "rested"

    engine.schedule("nightly", "0 3 * * *", report)
    await engine.apply_schedules()
    cron_job = await engine.atrigger_cron("nightly")
    assert cron_job.headers["dispatch-cron"] == "nightly"
    assert cron_job.headers["x-request-id"] == "none"

    handle = await nap.astart()
    await engine.drain(wait_scheduled=True)
    assert await handle.aresult(timeout=5) == "rested"
    # the start and the park of the sleep each wrote a driver job
    assert stamper.calls.count(("dispatch.workflow",)) == 2


async def test_plugins_define_jobs_in_every_engine_through_register_jobs() -> None:
    delivered: list[str] = []

    class Deliverer:
        @hookimpl
        def dispatch_register_jobs(self, engine: Engine) -> None:
            @engine.job(name="plugin.deliver", queue="plugin")
            async def deliver(what: str) -> None:
                delivered.append(what)

    engine = make_engine(Deliverer())
    assert engine.get_definition("plugin.deliver").queue == "plugin"
    await engine.aenqueue("plugin.deliver", "parcel")
    await engine.drain()
    assert delivered == ["parcel"]


async def test_run_and_step_middleware_wrap_each_drive_and_step_attempt() -> None:
    trail: list[str] = []

    async def around_run(call: RunCall, call_next: Any) -> DriveResult:
        trail.append(f"run>{call.run.name}:{call.ctx.job.name}")
        result: DriveResult = await call_next(call)
        trail.append(f"run<{result.outcome.value}:{result.error is not None}")
        return result

    async def around_step(call: StepCall, call_next: Any) -> Any:
        trail.append(f"step>{call.name}#{call.attempt}")
        try:
            value = await call_next(call)
        except Exception as exc:
            trail.append(f"step!{exc}")
            raise
        trail.append(f"step<{value}")
        return value

    class Tracer:
        @hookimpl
        def dispatch_register_middleware(self, registry: Any) -> None:
            registry.add_run("trace.run", around_run)
            registry.add_step("trace.step", around_step)

    engine = make_engine(Tracer())
    flaky_calls = 0

    async def flaky() -> int:
        nonlocal flaky_calls
        flaky_calls += 1
        if flaky_calls == 1:
            raise RuntimeError("first try fails")
        return 7

    @engine.workflow(name="flow")
    async def flow(wf: Workflow) -> int:
        value: int = await wf.step("flaky", flaky, retry=StepRetry(attempts=2, delay=0))
        await wf.sleep("pause", 0.05)
        return value

    @engine.workflow(name="doomed")
    async def doomed(wf: Workflow) -> None:
        await wf.step("boom", _boom)

    handle = await flow.astart()
    await engine.drain(wait_scheduled=True)
    assert await handle.aresult(timeout=5) == 7
    assert trail == [
        "run>flow:dispatch.workflow",
        "step>flaky#1",
        "step!first try fails",
        "step>flaky#2",
        "step<7",
        f"run<{DriveOutcome.SUSPENDED.value}:False",
        "run>flow:dispatch.workflow",
        f"run<{DriveOutcome.COMPLETED.value}:False",
    ]
    trail.clear()
    failed = await doomed.astart()
    await engine.drain()
    assert (await failed.aget()).state.value == "failed"
    assert trail == ["run>doomed:dispatch.workflow", "step>boom#1", "step!no", "run<failed:True"]


def _boom() -> None:
    raise ValueError("no")
