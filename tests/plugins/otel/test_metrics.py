"""Metrics: every counter exact, the histograms, and the two gauges."""

from __future__ import annotations

import asyncio

import pytest
from _otel_helpers import Telemetry, make_engine, make_telemetry, wait_for

from dispatch_core import JobContext
from dispatch_core.models import utcnow
from dispatch_core.states import JobState

COUNTERS = [
    "dispatch.jobs.enqueued",
    "dispatch.jobs.started",
    "dispatch.jobs.completed",
    "dispatch.jobs.failed",
    "dispatch.jobs.retried",
    "dispatch.jobs.dead_lettered",
    "dispatch.jobs.rescued",
]


def counts(tel: Telemetry, name: str, queue: str) -> dict[str, int]:
    return {
        metric.rsplit(".", 1)[1]: tel.value(
            metric, dispatch__job__name=name, messaging__destination__name=queue
        )
        for metric in COUNTERS
    }


async def test_counters_are_exact(telemetry: Telemetry) -> None:
    engine = make_engine(telemetry)

    @engine.job(name="ok", queue="fast")
    async def ok(n: int) -> None:
        return None

    @engine.job(name="flaky", max_retries=2)
    async def flaky(ctx: JobContext) -> None:
        if ctx.attempt == 1:
            raise ValueError("once")

    @engine.job(name="doomed", max_retries=1)
    async def doomed() -> None:
        raise ValueError("always")

    async with engine:
        await ok.aenqueue_many([1, 2, 3])
        await ok.aenqueue(4, queue="slow")
        await flaky.aenqueue()
        await doomed.aenqueue()
        await doomed.aenqueue()
        # A duplicate unique key writes nothing: not counted.
        await ok.aenqueue(5, unique_key="k")
        await ok.aenqueue(5, unique_key="k")
        await engine.drain(wait_scheduled=True)
        await engine.hooks.flush()
    assert counts(telemetry, "ok", "fast") == {
        "enqueued": 4,
        "started": 4,
        "completed": 4,
        "failed": 0,
        "retried": 0,
        "dead_lettered": 0,
        "rescued": 0,
    }
    assert counts(telemetry, "ok", "slow")["completed"] == 1
    assert counts(telemetry, "flaky", "default") == {
        "enqueued": 1,
        "started": 2,
        "completed": 1,
        "failed": 0,
        "retried": 1,
        "dead_lettered": 0,
        "rescued": 0,
    }
    assert counts(telemetry, "doomed", "default") == {
        "enqueued": 2,
        "started": 4,
        "completed": 0,
        "failed": 2,
        "retried": 2,
        "dead_lettered": 2,
        "rescued": 0,
    }
    for point in telemetry.points("dispatch.jobs.started"):
        assert set(point.attributes) == {"dispatch.job.name", "messaging.destination.name"}


async def test_duration_and_queue_latency_histograms(telemetry: Telemetry) -> None:
    engine = make_engine(telemetry)

    @engine.job(name="nap", max_retries=1)
    async def nap(ctx: JobContext, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if ctx.attempt == 1 and seconds > 0.01:
            raise ValueError("woke up grumpy")

    async with engine:
        await nap.aenqueue(0.05)
        await nap.aenqueue(0.0, delay=0.2)
        await engine.drain(wait_scheduled=True)
    durations = telemetry.by_attributes("dispatch.job.duration")
    base = {("dispatch.job.name", "nap"), ("messaging.destination.name", "default")}
    completed = durations[frozenset({*base, ("dispatch.job.outcome", "completed")})]
    failed = durations[frozenset({*base, ("dispatch.job.outcome", "failed")})]
    assert (completed.count, failed.count) == (2, 1)
    assert failed.sum >= 0.05
    assert completed.sum >= 0.05
    latency = telemetry.by_attributes("dispatch.job.queue_latency")[frozenset(base)]
    assert latency.count == 3
    # Measured from when each job became runnable: the delayed job's 0.2 s does not count.
    assert latency.max < 0.2
    assert latency.min >= 0.0
    for points in (completed, latency):
        assert points.explicit_bounds[0] == 0.005


async def test_histograms_off_keeps_the_counters() -> None:
    telemetry = make_telemetry(histograms=False)
    engine = make_engine(telemetry)

    @engine.job(name="quick")
    async def quick() -> None:
        return None

    async with engine:
        await quick.aenqueue()
        await quick.aenqueue()
        await engine.drain()
        await engine.hooks.flush()
    assert telemetry.points("dispatch.job.duration") == []
    assert telemetry.points("dispatch.job.queue_latency") == []
    assert counts(telemetry, "quick", "default")["started"] == 2
    assert counts(telemetry, "quick", "default")["completed"] == 2


async def test_running_gauge_counts_jobs_running_here(telemetry: Telemetry) -> None:
    engine = make_engine(telemetry)
    seen: list[float] = []

    @engine.job(name="look", queue="inner")
    async def look() -> None:
        seen.append(telemetry.value("dispatch.jobs.running", messaging__destination__name="inner"))

    async with engine:
        await look.aenqueue()
        await engine.drain()
    assert seen == [1]
    [point] = telemetry.points("dispatch.jobs.running")
    assert (dict(point.attributes), point.value) == ({"messaging.destination.name": "inner"}, 0)


async def test_queue_depth_gauge_reads_the_store() -> None:
    tel = make_telemetry(queue_depth_interval=0.02)
    engine = make_engine(tel)

    @engine.job(name="wait", queue="backlog")
    async def wait() -> None:
        return None

    def depth() -> int:
        return int(tel.value("dispatch.queue.depth", messaging__destination__name="backlog"))

    try:
        async with engine:
            await wait.aenqueue_many([None] * 3)
            await wait_for(lambda: depth() == 3)
            await engine.drain()
            await wait_for(lambda: depth() == 0)
        # The engine is shut down: its poller stopped and its depths are forgotten.
        assert tel.otel.metrics is not None
        assert not tel.otel.metrics._pollers
        assert tel.points("dispatch.queue.depth") == []
    finally:
        tel.tracer_provider.shutdown()
        tel.meter_provider.shutdown()


async def test_queue_depth_is_not_read_when_nobody_collects() -> None:
    tel = make_telemetry(queue_depth_interval=0.01)
    engine = make_engine(tel)
    reads = 0
    aqueues = engine.aqueues

    async def counting() -> list[object]:
        nonlocal reads
        reads += 1
        return list(await aqueues())

    engine.aqueues = counting  # type: ignore[method-assign]
    try:
        async with engine:
            await asyncio.sleep(0.1)
            assert reads == 1  # the first read, at start; then only on demand
            tel.points("dispatch.queue.depth")
            await wait_for(lambda: reads == 2)
    finally:
        tel.tracer_provider.shutdown()
        tel.meter_provider.shutdown()


async def test_a_rescued_job_is_counted(telemetry: Telemetry) -> None:
    engine = make_engine(telemetry)

    @engine.job(name="orphan", max_retries=1)
    async def orphan() -> None:
        return None

    job = await orphan.aenqueue()
    # A worker that claims the job and dies: nobody heartbeats its lease.
    (claimed,) = await engine.store.claim(
        worker_id="wkr_dead", queues=None, names=None, limit=1, lease_seconds=0.2, now=utcnow()
    )
    assert claimed.id == job.id
    worker = engine.worker(
        rescue_interval=0.05, poll_interval=0.05, heartbeat_interval=0.05, worker_timeout=0.3
    )
    run = asyncio.create_task(worker.run())

    async def completed() -> bool:
        return (await engine.aget_job(job.id)).state is JobState.COMPLETED

    await wait_for(completed)
    worker.stop()
    await run
    await engine.hooks.flush()
    assert counts(telemetry, "orphan", "default") == {
        "enqueued": 1,
        "started": 1,  # the dead worker's attempt never reached a middleware
        "completed": 1,
        "failed": 0,
        "retried": 1,
        "dead_lettered": 0,
        "rescued": 1,
    }
    await engine.aclose()


@pytest.mark.slow
async def test_scheduled_cron_fires_are_enqueued_and_traced(telemetry: Telemetry) -> None:
    engine = make_engine(telemetry)
    ticks: list[str] = []

    @engine.cron("* * * * * *", name="every.second")
    async def every_second(ctx: JobContext) -> None:
        ticks.append(ctx.job.headers["dispatch-cron-tick"])

    worker = engine.worker(heartbeat_interval=0.05, worker_timeout=0.3, rescue_interval=0.05)
    run = asyncio.create_task(worker.run())
    await wait_for(lambda: len(ticks) >= 1, timeout=5)
    worker.stop()
    await run
    await engine.hooks.flush()
    fired = telemetry.spans("cron every.second")
    assert fired
    assert {(s.attributes or {})["dispatch.cron.tick"] for s in fired} >= set(ticks)
    name = every_second.name
    entry_counts = counts(telemetry, name, "default")
    assert entry_counts["enqueued"] == len(fired)
    assert entry_counts["completed"] == len(ticks)
    await engine.aclose()
