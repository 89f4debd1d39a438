"""Worker semantics on the memory store: retries, DLQ, timeouts, cancel, shutdown, leases."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

import pytest

from dispatch_core import Constant, Engine, JobContext, JobState, current_tenant
from dispatch_core.models import utcnow
from dispatch_core.stores import MemoryStore
from dispatch_core.testing import capture_events


def make_engine(**kw: object) -> Engine:
    return Engine(MemoryStore(), load_entrypoints=False, backoff=Constant(interval=0), **kw)  # type: ignore[arg-type]


async def wait_for(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_runs_async_and_sync_handlers_with_typed_payloads() -> None:
    engine = make_engine()
    seen: list[tuple[str, int, str]] = []

    @engine.job(name="a")
    async def a(ctx: JobContext, n: int) -> int:
        seen.append(("async", n, threading.current_thread().name))
        return n * 2

    @engine.job(name="s")
    def s(n: int, ctx: JobContext) -> dict[str, int]:
        assert ctx.attempt == 1
        seen.append(("sync", n, threading.current_thread().name))
        return {"n": n}

    ja = await a.aenqueue(21)
    js = await s.aenqueue(5)
    result = await engine.drain()
    assert result.completed == 2
    assert (await engine.aget_job(ja.id)).result == 42
    assert (await engine.aget_job(js.id)).result == {"n": 5}
    kinds = {k: t for k, _, t in seen}
    assert kinds["async"] == threading.main_thread().name
    assert kinds["sync"].startswith("dispatch-")  # ran in the worker's thread pool


async def test_retries_then_succeeds() -> None:
    engine = make_engine()
    attempts: list[int] = []

    @engine.job(name="flaky", max_retries=3)
    async def flaky(ctx: JobContext) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ValueError(f"boom {ctx.attempt}")

    job = await flaky.aenqueue()
    with capture_events(engine) as events:
        result = await engine.drain(wait_scheduled=True)
    assert attempts == [1, 2, 3]
    assert (result.completed, result.retried, result.failed) == (1, 2, 0)
    done = await engine.aget_job(job.id)
    assert done.state is JobState.COMPLETED
    assert done.attempt == 3
    assert events.names() == [
        "job_started",
        "job_retrying",
        "job_started",
        "job_retrying",
        "job_started",
        "job_completed",
    ]
    retry = events.of("job_retrying")[0]
    assert retry.args["attempt"] == 1
    assert "ValueError: boom 1" in retry.args["job"].last_error


async def test_exhausted_retries_land_in_the_dlq() -> None:
    engine = make_engine()

    @engine.job(name="doomed", max_retries=2)
    async def doomed() -> None:
        raise RuntimeError("smtp down")

    job = await doomed.aenqueue()
    with capture_events(engine) as events:
        result = await engine.drain(wait_scheduled=True)
    assert (result.retried, result.failed) == (2, 1)
    failed = await engine.aget_job(job.id)
    assert failed.state is JobState.FAILED
    assert failed.attempt == 3
    (entry,) = await engine.alist_dlq()
    assert entry.job_id == job.id
    assert entry.error.startswith("RuntimeError: smtp down")
    assert "raise RuntimeError" in entry.error  # the handler's frame is kept
    assert "middleware.py" not in entry.error  # Dispatch's own frames are not
    assert events.names()[-2:] == ["job_failed", "job_dead_lettered"]

    replayed = await engine.areplay_dlq(entry.id)
    assert replayed.state is JobState.PENDING
    assert (await engine.aget_dlq(entry.id)).replay_job_id == replayed.id
    assert await engine.apurge_dlq(older_than=timedelta(0)) == 1


async def test_backoff_schedules_the_retry() -> None:
    engine = Engine(MemoryStore(), load_entrypoints=False)  # default backoff: jitter, 1s..60s

    @engine.job(name="later", backoff=Constant(interval=120))
    async def later() -> None:
        raise ValueError("not yet")

    job = await later.aenqueue()
    before = utcnow()
    result = await engine.drain()  # does not wait for the scheduled retry
    assert result.retried == 1
    again = await engine.aget_job(job.id)
    assert again.state is JobState.RETRYING
    assert again.run_at >= before + timedelta(seconds=119)


async def test_async_timeout_is_enforced() -> None:
    engine = make_engine()

    @engine.job(name="slow", timeout=0.2, max_retries=0)
    async def slow() -> None:
        await asyncio.sleep(30)

    job = await slow.aenqueue()
    t0 = time.monotonic()
    result = await engine.drain()
    assert time.monotonic() - t0 < 10
    assert result.failed == 1
    failed = await engine.aget_job(job.id)
    assert failed.last_error is not None
    assert failed.last_error.startswith("JobTimeoutError: job slow timed out after 0.2s")


async def test_sync_timeout_marks_the_attempt_timed_out() -> None:
    engine = make_engine()
    saw_cancel = threading.Event()

    @engine.job(name="blocking", timeout=0.2, max_retries=0)
    def blocking(ctx: JobContext) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if ctx.cancelled:  # cooperative: the thread cannot be killed
                saw_cancel.set()
                return
            time.sleep(0.01)

    job = await blocking.aenqueue()
    result = await engine.drain()
    assert result.failed == 1
    assert "timed out" in ((await engine.aget_job(job.id)).last_error or "")
    assert saw_cancel.wait(2)


async def test_panicking_handler_cannot_kill_the_worker() -> None:
    engine = make_engine()

    @engine.job(name="exit", max_retries=0)
    async def exits() -> None:
        raise SystemExit(3)

    @engine.job(name="fine")
    async def fine() -> None: ...

    await exits.aenqueue()
    ok = await fine.aenqueue()
    result = await engine.drain()
    assert (result.failed, result.completed) == (1, 1)
    assert (await engine.aget_job(ok.id)).state is JobState.COMPLETED
    (entry,) = await engine.alist_dlq()
    assert "HandlerCrashedError" in entry.error


async def test_priority_order_within_one_worker() -> None:
    engine = make_engine()
    order: list[int] = []

    @engine.job(name="p")
    async def p(n: int) -> None:
        order.append(n)

    for n, prio in ((1, 0), (2, 5), (3, -1), (4, 5)):
        await p.aenqueue(n, priority=prio)
    await engine.drain(concurrency=1)
    assert order == [2, 4, 1, 3]


async def test_queues_are_respected() -> None:
    engine = make_engine()
    ran: list[str] = []

    @engine.job(name="q")
    async def q(tag: str) -> None:
        ran.append(tag)

    await q.aenqueue("a", queue="alpha")
    b = await q.aenqueue("b", queue="beta")
    await engine.drain(queues=["alpha"])
    assert ran == ["a"]
    assert (await engine.aget_job(b.id)).state is JobState.PENDING


async def test_unknown_names_are_left_for_other_workers() -> None:
    store = MemoryStore()
    producer = Engine(store, load_entrypoints=False)
    consumer = Engine(store, load_entrypoints=False)

    @producer.job(name="only.producer.knows")
    async def a() -> None: ...

    @consumer.job(name="both")
    async def b() -> None: ...

    @producer.job(name="both")
    async def b2() -> None: ...

    ja = await a.aenqueue()
    jb = await b2.aenqueue()
    result = await consumer.drain()
    assert result.completed == 1
    assert (await producer.aget_job(ja.id)).state is JobState.PENDING
    assert (await producer.aget_job(jb.id)).state is JobState.COMPLETED


async def test_in_process_enqueue_wakes_an_idle_worker() -> None:
    engine = make_engine()
    done = asyncio.Event()

    @engine.job(name="ping")
    async def ping() -> None:
        done.set()

    # A poll interval of a minute: only the wake-up can get the job picked up in time.
    worker = engine.worker(poll_interval=60)
    run = asyncio.create_task(worker.run())
    await asyncio.sleep(0.3)  # let it go idle
    await ping.aenqueue()
    await asyncio.wait_for(done.wait(), 5)
    worker.stop()
    stats = await run
    assert stats.completed == 1


async def test_sync_enqueue_from_another_thread_wakes_the_worker() -> None:
    engine = make_engine()
    done = asyncio.Event()

    @engine.job(name="ping")
    async def ping() -> None:
        done.set()

    worker = engine.worker(poll_interval=60)
    run = asyncio.create_task(worker.run())
    await asyncio.sleep(0.3)
    await asyncio.to_thread(ping.enqueue)
    await asyncio.wait_for(done.wait(), 5)
    worker.stop()
    await run


async def test_cancel_pending_job() -> None:
    engine = make_engine()

    @engine.job(name="never")
    async def never() -> None:
        raise AssertionError("cancelled jobs must not run")

    job = await never.aenqueue()
    assert (await engine.acancel(job.id)).state is JobState.CANCELLED
    assert (await engine.drain()).processed == 0


async def test_cancel_running_job_stops_it() -> None:
    engine = make_engine()
    started = asyncio.Event()
    stopped = asyncio.Event()

    @engine.job(name="long")
    async def long() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            stopped.set()

    job = await long.aenqueue()
    worker = engine.worker(lease_seconds=0.6)  # heartbeats every 0.2 s
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    await engine.acancel(job.id)
    await asyncio.wait_for(stopped.wait(), 5)
    worker.stop()
    stats = await run
    assert stats.lost == 1
    assert (await engine.aget_job(job.id)).state is JobState.CANCELLED


async def test_graceful_shutdown_waits_for_running_jobs() -> None:
    engine = make_engine()
    started = asyncio.Event()

    @engine.job(name="short")
    async def short() -> str:
        started.set()
        await asyncio.sleep(0.3)
        return "done"

    job = await short.aenqueue()
    worker = engine.worker(grace_period=5)
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    worker.stop()
    stats = await run
    assert stats.completed == 1
    assert (await engine.aget_job(job.id)).result == "done"


async def test_shutdown_past_grace_releases_without_consuming_the_attempt() -> None:
    engine = make_engine()
    started = asyncio.Event()

    @engine.job(name="stuck", max_retries=0)
    async def stuck() -> None:
        started.set()
        await asyncio.sleep(30)

    job = await stuck.aenqueue()
    worker = engine.worker(grace_period=0.2)
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    worker.stop()
    stats = await run
    assert stats.released == 1
    back = await engine.aget_job(job.id)
    assert back.state is JobState.PENDING
    assert back.attempt == 0  # max_retries=0 and still runnable: the attempt was given back
    assert back.attempt_token is None


async def test_second_stop_cancels_at_once() -> None:
    engine = make_engine()
    started = asyncio.Event()

    @engine.job(name="stuck")
    async def stuck() -> None:
        started.set()
        await asyncio.sleep(30)

    await stuck.aenqueue()
    worker = engine.worker(grace_period=60)
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    worker.stop()
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    worker.stop()
    stats = await asyncio.wait_for(run, 5)
    assert time.monotonic() - t0 < 2
    assert stats.released == 1


async def test_expired_lease_is_rescued_as_a_counted_attempt() -> None:
    engine = make_engine()
    ran: list[int] = []

    @engine.job(name="orphan", max_retries=1)
    async def orphan(ctx: JobContext) -> None:
        ran.append(ctx.attempt)

    job = await orphan.aenqueue()
    # A worker that claims the job and then dies: nobody heartbeats its lease.
    (claimed,) = await engine.store.claim(
        worker_id="wkr_dead", queues=None, names=None, limit=1, lease_seconds=0.2, now=utcnow()
    )
    assert claimed.id == job.id
    worker = engine.worker(
        rescue_interval=0.1, poll_interval=0.05, heartbeat_interval=0.05, worker_timeout=0.3
    )
    with capture_events(engine) as events:
        run = asyncio.create_task(worker.run())

        async def completed() -> bool:
            return (await engine.aget_job(job.id)).state is JobState.COMPLETED

        await wait_for(completed)
        worker.stop()
        stats = await run
    assert stats.rescued == 1
    assert ran == [2]  # the lost attempt counted
    assert events.names().count("job_rescued") == 1
    assert events.names().index("job_rescued") < events.names().index("job_retrying")


async def test_rescue_of_last_attempt_dead_letters() -> None:
    engine = make_engine()

    @engine.job(name="orphan", max_retries=0)
    async def orphan() -> None: ...

    job = await orphan.aenqueue()
    await engine.store.claim(
        worker_id="wkr_dead", queues=None, names=None, limit=1, lease_seconds=0.1, now=utcnow()
    )
    worker = engine.worker(rescue_interval=0.1, heartbeat_interval=0.05, worker_timeout=0.3)
    run = asyncio.create_task(worker.run())

    async def failed() -> bool:
        return (await engine.aget_job(job.id)).state is JobState.FAILED

    await wait_for(failed)
    worker.stop()
    await run
    (entry,) = await engine.alist_dlq()
    assert "died or stalled: its lease expired" in entry.error


async def test_heartbeats_keep_a_long_job_leased() -> None:
    engine = make_engine()

    @engine.job(name="long", max_retries=0)
    async def long() -> str:
        await asyncio.sleep(1.0)  # far beyond the 0.3 s lease
        return "ok"

    job = await long.aenqueue()
    worker = engine.worker(lease_seconds=0.3, rescue_interval=0.05)
    result = await worker.drain()
    assert (result.completed, result.rescued, result.lost) == (1, 0, 0)
    assert (await engine.aget_job(job.id)).result == "ok"


async def test_context_and_tenant_scope() -> None:
    engine = make_engine()
    seen: dict[str, object] = {}

    @engine.job(name="child")
    async def child(ctx: JobContext) -> None:
        seen["child_tenant"] = ctx.tenant

    @engine.job(name="parent")
    async def parent(ctx: JobContext) -> None:
        seen["id"] = ctx.id
        seen["tenant"] = current_tenant()
        ctx.log.info("logging works")
        await child.aenqueue()  # inherits the tenant

    job = await parent.aenqueue(tenant="acme")
    await engine.drain()
    assert seen == {"id": job.id, "tenant": "acme", "child_tenant": "acme"}
    assert current_tenant() is None


async def test_stale_outcome_is_discarded_not_written() -> None:
    """A worker whose job was rescued meanwhile must not overwrite the new attempt."""
    engine = make_engine()
    release = asyncio.Event()

    @engine.job(name="slow", max_retries=3)
    async def slow(ctx: JobContext) -> int:
        if ctx.attempt == 1:
            await release.wait()
        return ctx.attempt

    job = await slow.aenqueue()
    # heartbeats far apart: the lease lapses while attempt 1 is blocked
    w1 = engine.worker(lease_seconds=0.2, heartbeat_interval=30, rescue_interval=30)
    run1 = asyncio.create_task(w1.run())

    async def running() -> bool:
        return (await engine.aget_job(job.id)).state is JobState.RUNNING

    await wait_for(running)
    await asyncio.sleep(0.3)
    assert [j.id for j in await engine.store.rescue_expired(now=utcnow())] == [job.id]
    w2 = engine.worker(lease_seconds=30)
    await w2.drain()  # attempt 2 completes
    release.set()  # attempt 1 finishes late
    await asyncio.sleep(0.2)
    w1.stop()
    stats1 = await run1
    assert stats1.lost == 1
    final = await engine.aget_job(job.id)
    assert (final.state, final.result, final.attempt) == (JobState.COMPLETED, 2, 2)


async def test_drain_times_out_cleanly() -> None:
    engine = make_engine()

    @engine.job(name="forever", timeout=None)
    async def forever() -> None:
        await asyncio.sleep(30)

    job = await forever.aenqueue()
    with pytest.raises(TimeoutError, match="drain did not finish"):
        await engine.drain(timeout=0.3)
    assert (await engine.aget_job(job.id)).state is JobState.PENDING  # released


async def test_retry_job_asks_for_a_delay_and_keeps_the_cause() -> None:
    from dispatch_core import RetryJob

    engine = make_engine()
    attempts: list[int] = []

    @engine.job(name="later", max_retries=1)
    async def later(ctx: JobContext) -> None:
        attempts.append(ctx.attempt)
        try:
            raise ConnectionError("gateway busy")
        except ConnectionError as exc:
            raise RetryJob(delay=3600) from exc

    job = await later.aenqueue()
    await engine.drain()
    retried = await engine.aget_job(job.id)
    assert retried.state is JobState.RETRYING
    assert retried.last_error is not None
    assert retried.last_error.startswith("ConnectionError: gateway busy")
    wait = (retried.run_at - utcnow()).total_seconds()
    assert 3500 < wait <= 3600  # the asked delay, not the zero backoff of make_engine
    assert attempts == [1]


async def test_fail_job_dead_letters_at_once_with_its_cause() -> None:
    from dispatch_core import FailJob

    engine = make_engine()
    attempts: list[int] = []

    @engine.job(name="refused", max_retries=5)
    async def refused(ctx: JobContext) -> None:
        attempts.append(ctx.attempt)
        try:
            raise ValueError("card declined")
        except ValueError as exc:
            raise FailJob() from exc

    job = await refused.aenqueue()
    with capture_events(engine) as events:
        await engine.drain()
    failed = await engine.aget_job(job.id)
    assert failed.state is JobState.FAILED
    assert attempts == [1]  # five retries left, none used
    [entry] = await engine.alist_dlq()
    assert entry.job_id == job.id
    assert entry.error.startswith("ValueError: card declined")
    assert events.names().count("job_dead_lettered") == 1


async def test_a_dead_letter_is_logged_only_once_the_store_wrote_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from dispatch_core import FailJob

    engine = make_engine()

    @engine.job(name="refused", max_retries=0)
    async def refused(ctx: JobContext) -> None:
        # Another worker's leader takes the job back under this attempt (its lease is fenced
        # off): the failure this attempt reports is refused by the store.
        await engine.store.rescue_expired(now=utcnow() + timedelta(days=1))
        raise FailJob("the handler's own reason")

    @engine.job(name="written", max_retries=0)
    async def written(ctx: JobContext) -> None:
        raise FailJob("a failure the store takes")

    with caplog.at_level(logging.WARNING, logger="dispatch_core"):
        bad = await refused.aenqueue()
        await engine.drain()
        good = await written.aenqueue()
        await engine.drain()
    messages = [r.getMessage() for r in caplog.records]
    assert not any("the handler's own reason" in m for m in messages), messages
    assert any(f"outcome fail of job {bad.id} discarded" in m for m in messages)
    assert any(
        f"job {good.id} (written) failed for good" in m and "a failure the store takes" in m
        for m in messages
    )
