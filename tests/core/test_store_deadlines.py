"""Every store call of a worker and of its leader duties has a deadline (issue 16): a hung
connection (a store call that never returns) stalls nothing for longer than it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from datetime import datetime

import pytest

from dispatch_core import ConfigurationError, Engine, Job, JobState
from dispatch_core.stores import MemoryStore


class HangingStore(MemoryStore):
    """A memory store whose first calls of the named operations never return, as over a
    half-open TCP connection."""

    def __init__(self, *hang: str) -> None:
        super().__init__()
        self.hang = {name: 1 for name in hang}
        self.hung: list[str] = []

    async def _maybe_hang(self, name: str) -> None:
        if self.hang.get(name):
            self.hang[name] -= 1
            self.hung.append(name)
            await asyncio.Event().wait()  # never set

    async def claim(self, **kw: object) -> list[Job]:
        await self._maybe_hang("claim")
        return await super().claim(**kw)  # type: ignore[arg-type]

    async def acquire_leadership(self, *, worker_id: str, ttl: float, now: datetime) -> bool:
        await self._maybe_hang("acquire_leadership")
        return await super().acquire_leadership(worker_id=worker_id, ttl=ttl, now=now)

    async def next_run_at(
        self, *, queues: Collection[str] | None, names: Collection[str] | None
    ) -> datetime | None:
        await self._maybe_hang("next_run_at")
        return await super().next_run_at(queues=queues, names=names)


async def test_a_hung_claim_times_out_and_the_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = HangingStore("claim")
    engine = Engine(store, load_entrypoints=False)

    @engine.job(name="noop")
    async def noop() -> None: ...

    job = await noop.aenqueue()
    w = engine.worker(store_timeout=0.3, poll_interval=0.05)
    with caplog.at_level(logging.WARNING, logger="dispatch_core"):
        stats = await w.drain(timeout=10)
    assert store.hung == ["claim"]
    assert stats.completed == 1
    assert (await engine.aget_job(job.id)).state is JobState.COMPLETED
    assert any("polling failed" in r.getMessage() for r in caplog.records)


async def test_a_hung_leader_election_times_out_and_the_leader_is_elected() -> None:
    store = HangingStore("acquire_leadership")
    engine = Engine(store, load_entrypoints=False)
    w = engine.worker(store_timeout=0.3, rescue_interval=0.05, poll_interval=0.05)
    task = asyncio.create_task(w.run())
    try:
        for _ in range(200):
            if w.leader is not None and w.leader.is_leader:
                break
            await asyncio.sleep(0.05)
        assert store.hung == ["acquire_leadership"]
        assert w.leader is not None
        assert w.leader.is_leader
    finally:
        w.stop()
        await task


def test_store_timeout_must_be_positive() -> None:
    engine = Engine(MemoryStore(), load_entrypoints=False)
    with pytest.raises(ConfigurationError, match="store_timeout must be > 0 seconds, got -1"):
        engine.worker(store_timeout=-1)
