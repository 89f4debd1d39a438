"""The plugin as users meet it: Engine("redis://...") runs jobs, from async and blocking code."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

from dispatch_core import Engine
from dispatch_core.backoff import Constant
from dispatch_core.context import JobContext
from dispatch_core.models import utcnow
from dispatch_core.states import JobState
from dispatch_plugins.redis import RedisStore, RedisSyncStore


async def test_engine_drains_with_retries_and_dead_letters(redis_url: str) -> None:
    engine = Engine(redis_url, backoff=Constant(interval=0))
    runs: list[tuple[int, int]] = []

    @engine.job(name="flaky", max_retries=2)
    async def flaky(ctx: JobContext, n: int) -> int:
        runs.append((n, ctx.job.attempt))
        if n % 2 and ctx.job.attempt < 2:
            raise RuntimeError(f"flaky {n}")
        return n * 10

    @engine.job(name="doomed", max_retries=1)
    def doomed(n: int) -> None:
        raise ValueError(f"never {n}")

    try:
        jobs = await engine.aenqueue_many(flaky, range(20))
        bad = await doomed.aenqueue(7)
        result = await engine.drain(concurrency=10, wait_scheduled=True, timeout=30)
        assert result.completed == 20
        assert result.retried == 10 + 1
        assert result.failed == 1
        for job in jobs:
            done = await engine.aget_job(job.id)
            assert done.state is JobState.COMPLETED
            assert done.result == done.payload * 10
            assert done.attempt == (2 if done.payload % 2 else 1)
        assert sorted(runs) == sorted(
            [(n, 1) for n in range(20)] + [(n, 2) for n in range(20) if n % 2]
        )
        (entry,) = await engine.alist_dlq()
        assert entry.job_id == bad.id
        assert entry.attempts == 2
        assert "never 7" in entry.error
        counts = await engine.acount_jobs()
        assert {s: n for s, n in counts.items() if n} == {
            JobState.COMPLETED: 20,
            JobState.FAILED: 1,
        }
    finally:
        await engine.aclose()


async def test_delayed_and_retried_jobs_run_when_due(redis_url: str) -> None:
    """The Go store ran delayed jobs at once and never ran retried ones again."""
    engine = Engine(redis_url, backoff=Constant(interval=0.3))
    ran: dict[str, float] = {}
    t0 = asyncio.get_running_loop().time()

    @engine.job(name="later")
    async def later(tag: str) -> None:
        ran[tag] = asyncio.get_running_loop().time() - t0

    @engine.job(name="again", max_retries=1)
    async def again(ctx: JobContext, tag: str) -> None:
        if ctx.job.attempt == 1:
            raise RuntimeError("first attempt fails")
        ran[tag] = asyncio.get_running_loop().time() - t0

    try:
        await later.aenqueue("delayed", delay=0.5)
        await again.aenqueue("retried")
        result = await engine.drain(wait_scheduled=True, timeout=30)
        assert result.completed == 2
        assert ran["delayed"] >= 0.45
        assert ran["retried"] >= 0.25
    finally:
        await engine.aclose()


def test_sync_producer_and_async_worker(redis_url: str) -> None:
    """Blocking code (a Flask view, a script) enqueues with redis.Redis; a worker runs it."""
    engine = Engine(redis_url)
    done: list[int] = []

    @engine.job(name="add")
    def add(n: int) -> int:
        done.append(n)
        return n + 1

    try:
        jobs = [add.enqueue(i) for i in range(5)]
        jobs += engine.enqueue_many(add, range(5, 10))
        dup = add.enqueue(99, unique_key="once")
        assert add.enqueue(100, unique_key="once").id == dup.id
        cancelled = add.enqueue(-1)
        assert engine.cancel(cancelled.id).state is JobState.CANCELLED
        assert isinstance(engine.blocking.sync(), RedisSyncStore)
        # from another thread, too
        out: list[str] = []
        t = threading.Thread(target=lambda: out.append(add.enqueue(11).id))
        t.start()
        t.join()

        async def drain_and_close() -> Any:
            # Close the async store inside the loop that opened it: its connections belong
            # to that loop and cannot be closed once asyncio.run() has ended it.
            async with engine:
                return await engine.drain(timeout=30)

        result = asyncio.run(drain_and_close())
        assert result.completed == 12
        assert sorted(done) == [*range(10), 11, 99]
        assert engine.get_job(jobs[3].id).result == 4
        assert engine.get_job(out[0]).state is JobState.COMPLETED
    finally:
        engine.close()


async def test_worker_registers_and_leads(redis_url: str) -> None:
    engine = Engine(redis_url)

    @engine.job(name="noop")
    async def noop() -> None:
        return None

    await engine.aopen()
    store = engine.store
    assert isinstance(store, RedisStore)
    worker = engine.worker(concurrency=2, poll_interval=0.2)
    running = asyncio.create_task(worker.run())
    try:
        for _ in range(200):
            if await store.get_leader(now=utcnow()) == worker.id:
                break
            await asyncio.sleep(0.02)
        assert await store.get_leader(now=utcnow()) == worker.id
        (row,) = await store.list_workers()
        assert row.id == worker.id
        assert row.leader
    finally:
        worker.stop()
        await asyncio.wait_for(running, 15)
        await engine.aclose()
    assert await _leader_after_close(redis_url) is None


async def _leader_after_close(url: str) -> str | None:
    store = RedisStore(url)
    await store.open()
    try:
        return await store.get_leader(now=utcnow() + timedelta(seconds=1))
    finally:
        await store.close()
