"""A worker rides through a server killed with SIGKILL: nothing acknowledged is lost.

The private server runs with ``appendonly yes`` and ``appendfsync always``, so every write the
server acknowledged is on disk before the reply. While it is down the store raises
``StoreUnavailableError``; the worker backs off, the listener reconnects, and once the server is
back (replaying its append-only file) everything carries on.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from dispatch_core import Engine
from dispatch_core.errors import StoreUnavailableError
from dispatch_core.states import JobState
from dispatch_plugins.redis import RedisStore

from ._server import PrivateRedis

JOBS = 400


async def _until(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    for _ in range(int(timeout / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"not true after {timeout}s")


@pytest.fixture
def server(tmp_path: Path, require_service: Callable[[str], None]) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        require_service("the redis-server binary")
    made = PrivateRedis(tmp_path)
    made.start()
    try:
        yield made
    finally:
        made.stop()


@pytest.mark.slow
async def test_a_worker_rides_through_a_server_kill(
    server: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dispatch_plugins.redis.listener")
    engine = Engine(f"{server.url}?prefix=restart&socket_timeout=2")
    executions: list[int] = []
    a_third, all_run = asyncio.Event(), asyncio.Event()
    acknowledged: set[str] = set()

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
        # A unique key per job makes a retried enqueue (was the first one applied?) harmless.
        while True:
            try:
                job = await work.aenqueue(i, unique_key=f"work-{i}")
                acknowledged.add(job.id)
                return
            except StoreUnavailableError:
                await asyncio.sleep(0.05)

    async def produce() -> None:
        for i in range(JOBS):
            await enqueue(i)
            if i % 10 == 9:
                await asyncio.sleep(0.01)

    await engine.aopen()
    store = engine.store
    assert isinstance(store, RedisStore)
    # short leases: a claim applied whose reply was lost in the kill is rescued soon
    worker = engine.worker(concurrency=10, poll_interval=0.5, lease_seconds=3)
    running = asyncio.create_task(worker.run())

    async def listening() -> bool:
        return bool(store._listeners)

    async def recorded() -> bool:
        assert not running.done(), running.exception()
        return (await engine.acount_jobs()).get(JobState.COMPLETED, 0) == JOBS

    await _until(listening, 10)
    (listener,) = store._listeners
    try:
        producing = asyncio.create_task(produce())
        await asyncio.wait_for(a_third.wait(), 30)
        assert not all_run.is_set()  # mid-run
        await asyncio.to_thread(server.kill)
        with pytest.raises(StoreUnavailableError) as info:
            await store.get_job("job_01h455vb4pex5vsknk084sn02q")
        assert f"127.0.0.1:{server.port}" in str(info.value)
        await asyncio.sleep(0.5)  # down for a while: the worker and the producer back off
        await asyncio.to_thread(server.start)
        await asyncio.wait_for(producing, 60)
        await asyncio.wait_for(all_run.wait(), 60)
        await _until(recorded, 60)
    finally:
        worker.stop()
        stats = await asyncio.wait_for(running, 30)
        await engine.aclose()

    runs = Counter(executions)
    assert sorted(runs) == list(range(JOBS))  # none lost
    assert len(acknowledged) == JOBS
    # at-least-once: a job runs twice only if the kill ate the reply to its outcome or claim
    assert sum(n - 1 for n in runs.values()) <= 10
    assert stats.completed >= JOBS - 10
    assert listener.reconnects >= 1
    assert any("re-established" in r.getMessage() for r in caplog.records)


async def test_a_unix_socket_url_works(server: PrivateRedis) -> None:
    engine = Engine(f"unix://{server.socket}?db=1&prefix=sock")

    @engine.job(name="echo")
    async def echo(s: str) -> str:
        return s

    try:
        job = await echo.aenqueue("hi")
        result = await engine.drain(timeout=20)
        assert result.completed == 1
        assert (await engine.aget_job(job.id)).result == "hi"
    finally:
        await engine.aclose()
