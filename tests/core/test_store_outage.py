"""A store that goes away mid-run: the worker keeps going and loses nothing."""

from __future__ import annotations

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
