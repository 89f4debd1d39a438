"""Workflow behaviour specific to the PostgreSQL store, beyond the conformance suite: the
races its row locks close, and the values jsonb cannot hold."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from dispatch_core._ids import new_id
from dispatch_core.errors import PayloadError, RunNotFoundError
from dispatch_core.models import JobFilter, NewJob, utcnow
from dispatch_core.testing import make_new_job
from dispatch_core.workflows.models import (
    NewEvent,
    NewRun,
    RunState,
    StepKind,
    StepRecord,
    StepState,
    WorkflowRun,
)
from dispatch_plugins.postgres import PostgresStore

_DRIVER = "pg.workflow.drive"


def _driver(run_id: str, *, run_at: datetime, unique_key: str | None = None) -> NewJob:
    return make_new_job(_DRIVER, payload={"run_id": run_id}, run_at=run_at, unique_key=unique_key)


def _event(run_id: str, name: str, *, now: datetime, payload: Any = None) -> NewEvent:
    return NewEvent(
        id=new_id("evt"), run_id=run_id, name=name, payload=payload or {}, created_at=now
    )


async def _start(store: PostgresStore, *, now: datetime, input: Any = None) -> WorkflowRun:
    new = NewRun(id=new_id("run"), name="pg.workflow", version=1, input=input or {}, created_at=now)
    return await store.create_run(new, _driver(new.id, run_at=now, unique_key=f"wf:{new.id}:0"))


@pytest.fixture
async def peers(pg_url: str, store: PostgresStore) -> AsyncIterator[list[PostgresStore]]:
    """Three stores on one schema, standing for three processes."""
    others = [PostgresStore(pg_url) for _ in range(2)]
    for other in others:
        await other.open()
    try:
        yield [store, *others]
    finally:
        for other in others:
            await other.close()


async def test_a_park_and_an_event_racing_never_lose_the_wake_up(
    peers: list[PostgresStore],
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


async def test_concurrent_creates_of_one_run_write_it_once(peers: list[PostgresStore]) -> None:
    now = utcnow()
    for round_ in range(10):
        run_id = new_id("run")
        news = [
            NewRun(id=run_id, name="pg.workflow", version=1, input={"i": i}, created_at=now)
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


async def test_two_replays_of_one_wait_take_the_same_event(peers: list[PostgresStore]) -> None:
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


async def test_inputs_and_payloads_with_nul_are_refused(store: PostgresStore) -> None:
    now = utcnow()
    new = NewRun(id=new_id("run"), name="pg.nul", version=1, input={"s": "a\x00b"}, created_at=now)
    driver = _driver(new.id, run_at=now)
    with pytest.raises(PayloadError, match="NUL"):
        await store.create_run(new, driver)
    with pytest.raises(RunNotFoundError):
        await store.get_run(new.id)
    assert await store.list_jobs(JobFilter()) == []  # the driver was not written either
    run = await _start(store, now=now)
    with pytest.raises(PayloadError, match="NUL"):
        await store.send_event(
            _event(run.id, "x", now=now, payload=["\x00"]),
            driver=_driver(run.id, run_at=now),
            now=now,
        )
    assert await store.take_event(run.id, "x", seq=0, now=now) is None


async def test_outputs_with_nul_are_stored_with_a_replacement(store: PostgresStore) -> None:
    now = utcnow()
    run = await _start(store, now=now)
    step = StepRecord(
        seq=0,
        name="s",
        kind=StepKind.STEP,
        state=StepState.COMPLETED,
        started_at=now,
        finished_at=now,
        output={"s": "a\x00b"},
        error="bad\x00byte",
    )
    saved = await store.save_step(run.id, step, now=now)
    assert saved.output == {"s": "a\ufffdb"}
    assert saved.error == "bad\\x00byte"
    done = await store.update_run(run.id, state=RunState.COMPLETED, now=now, output=["\x00"])
    assert done is not None
    assert done.output == ["\ufffd"]


async def test_deleting_a_run_deletes_its_history_and_events(store: PostgresStore) -> None:
    now = utcnow()
    run = await _start(store, now=now)
    step = StepRecord(
        seq=0, name="s", kind=StepKind.STEP, state=StepState.COMPLETED, started_at=now
    )
    await store.save_step(run.id, step, now=now)
    await store.send_event(
        _event(run.id, "x", now=now), driver=_driver(run.id, run_at=now), now=now
    )
    pool = await store._get_pool()
    async with pool.connection() as conn:
        await conn.execute(f'DELETE FROM "{store.schema}".workflow_runs WHERE id = %s', (run.id,))
        cur = await conn.execute(
            f'SELECT (SELECT count(*) FROM "{store.schema}".workflow_steps)'
            f' + (SELECT count(*) FROM "{store.schema}".workflow_events)'
        )
        assert await cur.fetchone() == (0,)
