"""Workflow races across processes, beyond the conformance suite: each decision about a run is
one script, so a park and an event, concurrent creates and concurrent takers never interleave."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from dispatch_core._ids import new_id
from dispatch_core.models import JobFilter, NewJob, utcnow
from dispatch_core.testing import make_new_job
from dispatch_core.workflows.models import (
    NewEvent,
    NewRun,
    RunState,
    WorkflowRun,
)
from dispatch_plugins.redis import RedisStore

_DRIVER = "redis.workflow.drive"


def _driver(run_id: str, *, run_at: datetime, unique_key: str | None = None) -> NewJob:
    return make_new_job(_DRIVER, payload={"run_id": run_id}, run_at=run_at, unique_key=unique_key)


def _event(run_id: str, name: str, *, now: datetime, payload: Any = None) -> NewEvent:
    return NewEvent(
        id=new_id("evt"), run_id=run_id, name=name, payload=payload or {}, created_at=now
    )


async def _start(store: RedisStore, *, now: datetime, input: Any = None) -> WorkflowRun:
    new = NewRun(
        id=new_id("run"), name="redis.workflow", version=1, input=input or {}, created_at=now
    )
    return await store.create_run(new, _driver(new.id, run_at=now, unique_key=f"wf:{new.id}:0"))


@pytest.fixture
async def peers(redis_url: str, store: RedisStore) -> AsyncIterator[list[RedisStore]]:
    """Three stores on one schema, standing for three processes."""
    others = [RedisStore(redis_url) for _ in range(2)]
    for other in others:
        await other.open()
    try:
        yield [store, *others]
    finally:
        for other in others:
            await other.close()


async def test_a_park_and_an_event_racing_never_lose_the_wake_up(
    peers: list[RedisStore],
) -> None:
    parker, sender, _ = peers
    now = utcnow()
    for round_ in range(20):
        run = await _start(parker, now=now)
        timer = _driver(run.id, run_at=now + timedelta(hours=1), unique_key=f"wf:{run.id}:1")
        ev = _event(run.id, "paid", now=now)
        parked, woken = await asyncio.gather(
            parker.update_run(
                run.id,
                state=RunState.WAITING,
                now=now,
                expect=frozenset({RunState.RUNNING}),
                generation=0,
                waiting_for="paid",
                wake_at=now + timedelta(hours=1),
                driver=timer,
            ),
            sender.send_event(ev, driver=_driver(run.id, run_at=now), now=now),
        )
        got = await parker.get_run(run.id)
        if parked is None:
            # the event came first: nothing was parked, the caller takes the event
            assert not woken, round_
            assert (got.state, got.generation) == (RunState.RUNNING, 0)
        else:
            # the park came first: the event woke it and made its timer due
            assert woken, round_
            assert (got.state, got.generation) == (RunState.RUNNING, 1)
            assert (await parker.get_job(timer.id)).run_at <= now + timedelta(seconds=1)
        taken = await parker.take_event(run.id, "paid", seq=1, now=now)
        assert taken is not None
        assert taken.id == ev.id


async def test_concurrent_creates_of_one_run_write_it_once(peers: list[RedisStore]) -> None:
    now = utcnow()
    for round_ in range(10):
        run_id = new_id("run")
        news = [
            NewRun(id=run_id, name="redis.workflow", version=1, input={"i": i}, created_at=now)
            for i in range(len(peers) * 2)
        ]
        drivers = [_driver(run_id, run_at=now) for _ in news]
        got = await asyncio.gather(
            *(s.create_run(n, d) for s, n, d in zip(peers * 2, news, drivers, strict=True))
        )
        assert len({repr(r.input) for r in got}) == 1, round_  # all got the one stored run
        stored = await peers[0].get_run(run_id)
        assert stored.input == got[0].input
        jobs = await peers[0].list_jobs(JobFilter(name=_DRIVER))
        assert sum(j.payload == {"run_id": run_id} for j in jobs) == 1, round_


async def test_two_replays_of_one_wait_take_the_same_event(peers: list[RedisStore]) -> None:
    now = utcnow()
    run = await _start(peers[0], now=now)
    for round_ in range(10):
        sent = [_event(run.id, f"tick-{round_}", now=now + timedelta(seconds=i)) for i in range(2)]
        for ev in sent:
            await peers[0].send_event(ev, driver=_driver(run.id, run_at=now), now=now)
        # every taker replays the same wait (the same seq): they all get the oldest event
        got = await asyncio.gather(
            *(s.take_event(run.id, f"tick-{round_}", seq=round_, now=now) for s in peers * 2)
        )
        assert {e.id for e in got if e is not None} == {sent[0].id}
        assert all(e is not None for e in got)
