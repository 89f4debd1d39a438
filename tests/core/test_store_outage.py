"""A store that goes away mid-run: the worker keeps going and loses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from dispatch_core import Engine, JobState, Outcome
from dispatch_core.stores import MemoryStore


class FlakyStore(MemoryStore):
    """Fails the first ``n`` claims and the first ``n`` finishes, like a dropped connection."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.claim_failures = n
        self.finish_failures = n

    async def claim(self, **kw):  # type: ignore[no-untyped-def,override]
        if self.claim_failures:
            self.claim_failures -= 1
            raise ConnectionError("store unreachable (claim)")
        return await super().claim(**kw)

    async def finish(self, outcomes: Sequence[Outcome], *, now: datetime) -> list[bool]:
        if self.finish_failures:
            self.finish_failures -= 1
            raise ConnectionError("store unreachable (finish)")
        return await super().finish(outcomes, now=now)


async def test_worker_survives_store_outage_and_records_every_outcome() -> None:
    store = FlakyStore(3)
    engine = Engine(store, load_entrypoints=False)
    ran: list[int] = []

    @engine.job(name="work")
    async def work(n: int) -> int:
        ran.append(n)
        return n

    jobs = await work.aenqueue_many(range(20))
    result = await engine.drain(timeout=30)
    assert result.completed == 20
    assert sorted(ran) == list(range(20))  # each ran once: no outcome was lost or re-run
    for job in jobs:
        done = await engine.aget_job(job.id)
        assert (done.state, done.result) == (JobState.COMPLETED, done.payload)
    assert store.claim_failures == store.finish_failures == 0


async def test_unserialisable_result_does_not_poison_the_batch() -> None:
    engine = Engine("memory://", load_entrypoints=False)

    @engine.job(name="odd")
    async def odd() -> object:
        return object()

    @engine.job(name="fine")
    async def fine() -> str:
        return "ok"

    a = await odd.aenqueue()
    b = await fine.aenqueue()
    result = await engine.drain()
    assert result.completed == 2
    assert "unserialisable_result" in (await engine.aget_job(a.id)).result
    assert (await engine.aget_job(b.id)).result == "ok"


async def test_idle_worker_survives_a_failing_next_run_at() -> None:
    class NoSchedule(MemoryStore):
        failures = 0

        async def next_run_at(self, **kw):  # type: ignore[no-untyped-def,override]
            self.failures += 1
            raise ConnectionError("store unreachable (next_run_at)")

    store = NoSchedule()
    engine = Engine(store, load_entrypoints=False)
    done = asyncio.Event()

    @engine.job(name="late")
    async def late() -> None:
        done.set()

    worker = engine.worker(poll_interval=0.05)
    run = asyncio.create_task(worker.run())
    await asyncio.sleep(0.3)  # idle polls keep failing in next_run_at
    assert store.failures >= 2
    assert not run.done()  # the worker did not die
    await late.aenqueue()
    await asyncio.wait_for(done.wait(), 5)
    worker.stop()
    assert (await run).completed == 1
