"""A worker keeps going through a server restart: nothing lost, nothing run twice."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from dispatch_core import Engine
from dispatch_core.errors import StoreUnavailableError
from dispatch_core.states import JobState
from dispatch_plugins.postgres import PostgresStore

from ._cluster import PrivateCluster

JOBS = 600


async def _until(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    for _ in range(int(timeout / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"not true after {timeout}s")


@pytest.mark.slow
async def test_a_worker_rides_through_a_server_restart(
    cluster: PrivateCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dispatch_plugins.postgres.listener")
    url = f"{cluster.dsn}?schema=dispatch&pool_timeout=20"
    engine = Engine(url)
    executions: list[int] = []
    a_third, all_run = asyncio.Event(), asyncio.Event()

    @engine.job(name="work")
    async def work(i: int) -> None:
        executions.append(i)
        seen = len(set(executions))
        if seen >= JOBS // 3:
            a_third.set()
        if seen >= JOBS:
            all_run.set()
        await asyncio.sleep(0.002)

    async def enqueue(i: int) -> None:
        # A unique key per job makes a retried enqueue (did the first one commit?) harmless.
        while True:
            try:
                await work.aenqueue(i, unique_key=f"work-{i}")
                return
            except StoreUnavailableError:
                await asyncio.sleep(0.05)

    async def produce() -> None:
        for i in range(JOBS):
            await enqueue(i)
            if i % 10 == 9:
                await asyncio.sleep(0.02)

    await engine.aopen()
    store = engine.store
    assert isinstance(store, PostgresStore)
    worker = engine.worker(concurrency=10, poll_interval=0.5)
    running = asyncio.create_task(worker.run())

    async def listening() -> bool:  # the worker listens once it has started
        return bool(store._listeners)

    async def recorded() -> bool:  # the last outcomes may still be on their way
        assert not running.done(), running.exception()
        return (await engine.acount_jobs()).get(JobState.COMPLETED, 0) == JOBS

    await _until(listening, 10)
    (listener,) = store._listeners
    try:
        producing = asyncio.create_task(produce())
        await asyncio.wait_for(a_third.wait(), 30)
        assert not all_run.is_set()  # mid-run
        await asyncio.to_thread(cluster.restart)
        await asyncio.wait_for(producing, 60)
        await asyncio.wait_for(all_run.wait(), 60)
        await _until(recorded, 60)
    finally:
        worker.stop()
        stats = await asyncio.wait_for(running, 30)
        await engine.aclose()

    runs = Counter(executions)
    assert sorted(runs) == list(range(JOBS))  # none lost...
    assert [i for i, n in runs.items() if n > 1] == []  # ...none run twice
    assert stats.completed == JOBS
    assert stats.lost == 0
    assert stats.rescued == 0
    assert listener.reconnects >= 1
    assert any("re-established" in r.getMessage() for r in caplog.records)
