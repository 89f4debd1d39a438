"""The fetcher: one claimer, batches sized to the free slots, idle backoff, wake-up."""

from __future__ import annotations

import asyncio
from typing import Any

from dispatch_core import Engine, Job
from dispatch_core.stores import MemoryStore


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.limits: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def claim(self, **kw: Any) -> list[Job]:
        self.limits.append(kw["limit"])
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001)  # a real store yields here
            return await super().claim(**kw)
        finally:
            self.in_flight -= 1


async def test_claims_are_batches_sized_to_free_slots_by_one_fetcher() -> None:
    store = CountingStore()
    engine = Engine(store, load_entrypoints=False)
    gate = asyncio.Event()
    four_started = asyncio.Event()
    all_done = asyncio.Event()
    started = finished = 0

    @engine.job(name="held")
    async def held() -> None:
        nonlocal started, finished
        started += 1
        if started == 4:
            four_started.set()
        await gate.wait()
        finished += 1
        if finished == 10:
            all_done.set()

    await held.aenqueue_many([None] * 10)
    worker = engine.worker(concurrency=4)
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(four_started.wait(), 5)
    await asyncio.sleep(0.1)
    assert store.limits[0] == 4  # one claim for every free slot
    assert started == 4  # and nothing more while the slots are full
    claims_while_full = len(store.limits)
    await asyncio.sleep(0.2)
    assert len(store.limits) == claims_while_full  # no polling while no slot is free
    gate.set()
    await asyncio.wait_for(all_done.wait(), 5)
    worker.stop()
    await run
    assert store.max_in_flight == 1  # a single fetcher: never two claims at once
    assert all(1 <= limit <= 4 for limit in store.limits)


async def test_idle_worker_backs_off_and_a_wake_resets_it() -> None:
    store = CountingStore()
    engine = Engine(store, load_entrypoints=False)
    ran = asyncio.Event()

    @engine.job(name="j")
    async def j() -> None:
        ran.set()

    worker = engine.worker(poll_interval=60)
    run = asyncio.create_task(worker.run())
    await asyncio.sleep(1.5)
    idle_claims = len(store.limits)
    # Waits of 50 ms doubling each time: about 5 claims in 1.5 s; a fixed 50 ms poll makes 30.
    assert 3 <= idle_claims <= 8
    await asyncio.sleep(0.2)  # the current wait is now near a second
    await j.aenqueue()  # wakes the fetcher at once, whatever its backoff
    await asyncio.wait_for(ran.wait(), 0.5)
    worker.stop()
    await run
