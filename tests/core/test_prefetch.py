"""Prefetch: jobs claimed ahead of free slots, leased, and given back when they wait."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dispatch_core import ConfigurationError, Engine, Job, JobContext, JobState, Worker
from dispatch_core.stores import MemoryStore


class CountingStore(MemoryStore):
    """Records each claim's limit and how many jobs the worker was running at the time."""

    def __init__(self) -> None:
        super().__init__()
        self.limits: list[int] = []
        self.running_at_claim: list[int] = []
        self.worker: Worker | None = None

    async def claim(self, **kw: Any) -> list[Job]:
        self.limits.append(kw["limit"])
        assert self.worker is not None
        self.running_at_claim.append(len(self.worker._active))
        await asyncio.sleep(0.001)  # a real store's round trip
        return await super().claim(**kw)


async def test_prefetch_claims_ahead_and_runs_everything_once() -> None:
    store = CountingStore()
    engine = Engine(store, load_entrypoints=False)
    ran: list[int] = []

    @engine.job(name="n")
    async def n(i: int) -> None:
        ran.append(i)
        await asyncio.sleep(0)

    await n.aenqueue_many(range(200))
    store.worker = engine.worker(concurrency=4, prefetch=4)
    result = await store.worker.drain()
    assert result.completed == 200
    assert sorted(ran) == list(range(200))
    assert store.limits[0] == 8  # the free slots plus the buffer
    # The buffer is refilled while every slot is busy: the round trip overlaps the work.
    assert max(store.running_at_claim) >= 4


async def test_without_prefetch_claims_wait_for_a_free_slot() -> None:
    store = CountingStore()
    engine = Engine(store, load_entrypoints=False)

    @engine.job(name="n")
    async def n(i: int) -> None:
        await asyncio.sleep(0)

    await n.aenqueue_many(range(50))
    store.worker = engine.worker(concurrency=4)
    await store.worker.drain()
    assert max(store.limits) == 4
    assert max(store.running_at_claim) < 4


async def test_prefetched_jobs_still_run_in_priority_order() -> None:
    engine = Engine("memory://", load_entrypoints=False)
    order: list[int] = []

    @engine.job(name="p")
    async def p(n: int) -> None:
        order.append(n)

    for n, prio in ((1, 0), (2, 5), (3, -1), (4, 5)):
        await p.aenqueue(n, priority=prio)
    await engine.worker(concurrency=1, prefetch=3).drain()
    assert order == [2, 4, 1, 3]


async def test_stale_prefetched_jobs_are_given_back_for_other_workers() -> None:
    engine = Engine("memory://", load_entrypoints=False)
    gate = asyncio.Event()
    started: list[tuple[int, str]] = []
    all_started = asyncio.Event()

    @engine.job(name="slow")
    async def slow(ctx: JobContext, i: int) -> None:
        started.append((i, ctx.worker_id))
        if len(started) == 3:
            all_started.set()
        await gate.wait()

    await slow.aenqueue_many(range(3))
    busy = engine.worker(concurrency=1, prefetch=2, heartbeat_interval=0.2)
    run_busy = asyncio.create_task(busy.run())
    await asyncio.sleep(0.6)  # two buffered jobs wait longer than a heartbeat interval
    counts = await engine.acount_jobs()
    assert (counts.get(JobState.RUNNING), counts.get(JobState.PENDING)) == (1, 2)
    back = await engine.alist_jobs(state="pending")
    assert all(j.attempt == 0 for j in back)  # given back without consuming an attempt
    idle = engine.worker(concurrency=2)
    run_idle = asyncio.create_task(idle.run())
    await asyncio.wait_for(all_started.wait(), 5)  # the idle worker took them
    gate.set()
    busy.stop()
    idle.stop()
    await asyncio.gather(run_busy, run_idle)
    assert sorted(i for i, _ in started) == [0, 1, 2]  # each started exactly once
    assert {w for _, w in started} == {busy.id, idle.id}


async def test_stop_gives_back_the_buffer() -> None:
    engine = Engine("memory://", load_entrypoints=False)
    gate = asyncio.Event()
    first = asyncio.Event()

    @engine.job(name="slow", max_retries=0)
    async def slow(i: int) -> None:
        first.set()
        await gate.wait()

    await slow.aenqueue_many(range(4))
    worker = engine.worker(concurrency=1, prefetch=3, grace_period=5)
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(first.wait(), 5)
    worker.stop()
    await asyncio.sleep(0.05)
    gate.set()
    stats = await run
    assert (stats.completed, stats.released) == (1, 3)
    pending = await engine.alist_jobs(state="pending")
    assert len(pending) == 3
    assert all(j.attempt == 0 for j in pending)


def test_negative_prefetch_is_refused() -> None:
    engine = Engine("memory://", load_entrypoints=False)
    with pytest.raises(ConfigurationError, match="prefetch must be >= 0"):
        engine.worker(prefetch=-1)
