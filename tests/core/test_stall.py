"""A worker whose event loop a handler blocks, and payloads no retry can mend (issue 16,
finding 8 and a low finding), on the memory store. Real processes on SQLite and PostgreSQL:
tests/e2e/test_stalled_workers.py."""

from __future__ import annotations

import asyncio
import collections
import logging
import time

import attrs
import pytest

from dispatch_core import Constant, Engine, JobContext, JobState, NewJob
from dispatch_core.models import utcnow
from dispatch_core.stores import MemoryStore


def make_engine() -> Engine:
    return Engine(MemoryStore(), load_entrypoints=False, backoff=Constant(interval=0))


async def test_a_blocked_loop_keeps_its_leases_and_gives_back_what_had_not_started(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = make_engine()
    runs: collections.Counter[str] = collections.Counter()

    @engine.job(name="blocker", max_retries=0, priority=10)
    async def blocker(ctx: JobContext) -> None:
        runs[ctx.id] += 1
        time.sleep(3.5)  # noqa: ASYNC251 -- the mistake under test

    @engine.job(name="quick", max_retries=0)
    async def quick(ctx: JobContext) -> None:
        runs[ctx.id] += 1

    b = await blocker.aenqueue()
    q = [await quick.aenqueue() for _ in range(2)]
    # Leases and the worker timeout are shorter than the block: without the guard the worker,
    # its own leader, declares itself dead once its loop runs again, and every job is lost.
    w = engine.worker(concurrency=3, lease_seconds=1.5, heartbeat_interval=0.5, worker_timeout=1.8)
    with caplog.at_level(logging.WARNING, logger="dispatch_core"):
        task = asyncio.create_task(w.run())

        async def finished() -> bool:
            ids = [b.id, *(j.id for j in q)]
            states = [(await engine.aget_job(i)).state for i in ids]
            return states == [JobState.COMPLETED] * len(ids)

        deadline = time.monotonic() + 20
        while not await finished():
            assert time.monotonic() < deadline, [await engine.aget_job(b.id)]
            await asyncio.sleep(0.05)
        w.stop()
        await task
    assert w.stats.rescued == 0
    assert w._guard is not None
    assert w._guard.stalls >= 1
    assert w._guard.given_back == 2  # the two quick jobs: claimed with the blocker, not started
    for job_id in (b.id, *(j.id for j in q)):
        job = await engine.aget_job(job_id)
        assert job.attempt == 1, job  # given back without charging an attempt
        assert runs[job_id] == 1
    messages = [r.getMessage() for r in caplog.records]
    # The warning names the job that holds the loop, and says what to do.
    assert any(f"job {b.id} (blocker) holds it" in m and "plain def" in m for m in messages)
    assert any("gave back 2 jobs that had not started" in m for m in messages)


async def test_a_drain_has_no_guard() -> None:
    engine = make_engine()

    @engine.job(name="noop")
    async def noop() -> None: ...

    await noop.aenqueue()
    w = engine.worker()
    await w.drain()
    assert w._guard is None


@attrs.frozen
class Order:
    order_id: int
    amount: float


async def test_a_payload_that_does_not_fit_its_type_is_dead_lettered_at_once() -> None:
    engine = make_engine()
    attempts: list[int] = []

    @engine.job(name="orders.charge", max_retries=5)
    async def charge(ctx: JobContext, order: Order) -> None:
        attempts.append(ctx.attempt)

    # Written by another version of the app, straight to the store: the field was renamed.
    now = utcnow()
    (job,) = await engine.store.enqueue(
        [
            NewJob(
                id="job_01jzzzzzzzzzzzzzzzzzzzzzzz",
                name="orders.charge",
                queue="default",
                payload={"id": 7, "amount": 9.5},
                priority=0,
                max_attempts=6,
                timeout=None,
                run_at=now,
                created_at=now,
            )
        ]
    )
    result = await engine.drain()
    assert result.failed == 1
    assert result.retried == 0  # no retry can mend it
    stored = await engine.aget_job(job.id)
    assert stored.state is JobState.FAILED
    assert stored.attempt == 1
    assert attempts == []  # the handler never ran
    assert stored.last_error is not None
    assert "order_id" in stored.last_error  # the path of what is wrong
    (entry,) = await engine.alist_dlq()
    assert entry.job_id == job.id
