"""SQLite specifics of the workflow operations: the version 3 migration, the indexes the
queries use, one write transaction per multi-statement write, and a park racing an event on
two connections."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import attrs
import pytest

from dispatch_core._ids import new_id
from dispatch_core.models import NewJob, utcnow
from dispatch_core.testing import make_new_job
from dispatch_core.workflows.models import NewEvent, NewRun, RunFilter, RunState
from dispatch_plugins.sqlite import SQLiteStore, ops
from dispatch_plugins.sqlite.connection import connect
from dispatch_plugins.sqlite.migrations import migrate
from dispatch_plugins.sqlite.ops.workflows import _EVENT_BY_SEQ, _EVENT_WAITING, _TAKE_EVENT
from dispatch_plugins.sqlite.schema import MIGRATIONS


@pytest.fixture
def conn(store: SQLiteStore) -> Iterator[sqlite3.Connection]:
    """A second connection to the store's (migrated) database, for the operations directly."""
    c = connect(store.path, busy_timeout_ms=5000)
    try:
        yield c
    finally:
        c.close()


def _new_run(now: datetime, **kw: str | None) -> NewRun:
    return NewRun(id=new_id("run"), name="wf", version=1, input={"n": 1}, created_at=now, **kw)


def _driver(run_id: str, unique_key: str | None = None) -> NewJob:
    return make_new_job("wf.drive", payload={"run_id": run_id}, unique_key=unique_key)


def _event(run_id: str, name: str, now: datetime) -> NewEvent:
    return NewEvent(id=new_id("evt"), run_id=run_id, name=name, payload=None, created_at=now)


def _plan(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> str:
    return " | ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))


def _tables(path: str) -> set[str]:
    c = sqlite3.connect(path)
    try:
        return {n for (n,) in c.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    finally:
        c.close()


async def test_a_version_2_database_is_upgraded_in_place(db_url: str, tmp_path: Path) -> None:
    path = str(tmp_path / "jobs.db")
    old = connect(path, busy_timeout_ms=5000)
    try:
        assert migrate(old, path, MIGRATIONS[:2]) == [m.name for m in MIGRATIONS[:2]]
        (job,) = ops.enqueue(old, [make_new_job()])
    finally:
        old.close()
    assert "workflow_runs" not in _tables(path)
    store = SQLiteStore(db_url)
    await store.open()
    try:
        assert await store.migrate() == [m.name for m in MIGRATIONS[2:]]
        assert {"workflow_runs", "workflow_steps", "workflow_events"} <= _tables(path)
        assert (await store.get_job(job.id)).payload == job.payload  # jobs are kept
        new = _new_run(utcnow())
        await store.create_run(new, _driver(new.id))
        assert [r.id for r in await store.list_runs(RunFilter())] == [new.id]
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("column", "index"),
    [
        ("state", "workflow_runs_state_idx"),
        ("name", "workflow_runs_name_idx"),
        ("tenant", "workflow_runs_tenant_idx"),
        ("parent_run_id", "workflow_runs_parent_idx"),
        ("correlation_key", "workflow_runs_correlation_idx"),
    ],
)
async def test_list_runs_filters_read_an_index_in_order(
    store: SQLiteStore, conn: sqlite3.Connection, column: str, index: str
) -> None:
    sql = f"SELECT id FROM workflow_runs WHERE {column} = ? ORDER BY id DESC LIMIT 10"
    plan = _plan(conn, sql, ("x",))
    assert index in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # no sort: the index is in id order


async def test_take_event_reads_the_events_index(
    store: SQLiteStore, conn: sqlite3.Connection
) -> None:
    for sql, params in (
        (_EVENT_BY_SEQ, ("run_x", "paid", 3)),
        (_EVENT_WAITING, ("run_x", "paid")),
        (_TAKE_EVENT, (3, "run_x", "paid")),
    ):
        plan = _plan(conn, sql, params)
        assert "workflow_events_run_idx" in plan, plan


def _traced(conn: sqlite3.Connection) -> list[str]:
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    return seen


async def test_writes_that_decide_on_a_run_are_one_write_transaction(
    store: SQLiteStore, conn: sqlite3.Connection
) -> None:
    now = utcnow()
    new = _new_run(now)
    seen = _traced(conn)
    ops.create_run(conn, new, _driver(new.id, f"wf:{new.id}:0"))
    parked = ops.update_run(
        conn,
        new.id,
        state=RunState.WAITING,
        now=now,
        generation=0,
        waiting_for="paid",
        driver=None,
    )
    assert parked is not None
    assert ops.send_event(conn, _event(new.id, "paid", now), driver=_driver(new.id), now=now)
    assert ops.take_event(conn, new.id, "paid", seq=1, now=now) is not None
    transactions = " ".join(s.split()[0] for s in seen)
    assert transactions.count("BEGIN") == 4
    assert transactions.count("COMMIT") == 4
    assert all(s == "BEGIN IMMEDIATE" for s in seen if s.startswith("BEGIN"))


async def test_create_run_is_all_or_nothing(store: SQLiteStore) -> None:
    now = utcnow()
    (taken,) = await store.enqueue([_driver("run_x")])
    new = _new_run(now)
    # a driver whose id is taken fails its insert, and the run is rolled back with it
    with pytest.raises(sqlite3.IntegrityError):
        await store.create_run(new, attrs.evolve(_driver(new.id), id=taken.id))
    assert await store.list_runs(RunFilter()) == []


def _race(parker: sqlite3.Connection, sender: sqlite3.Connection) -> None:
    """One round: ``parker`` parks a new run waiting for "paid" while ``sender`` sends it."""
    now = utcnow()
    new = _new_run(now)
    ops.create_run(parker, new, _driver(new.id, f"wf:{new.id}:0"))
    start = threading.Barrier(2)
    result: dict[str, object] = {}

    def park() -> None:
        start.wait()
        result["parked"] = ops.update_run(
            parker,
            new.id,
            state=RunState.WAITING,
            now=now,
            expect=frozenset({RunState.RUNNING}),
            generation=0,
            waiting_for="paid",
        )

    def send() -> None:
        start.wait()
        result["woken"] = ops.send_event(
            sender, _event(new.id, "paid", now), driver=_driver(new.id), now=now
        )

    threads = [threading.Thread(target=park), threading.Thread(target=send)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    run = ops.get_run(parker, new.id)
    assert run.state is RunState.RUNNING
    if result["parked"] is not None:
        # parked first: the event woke it, and its wake-up job is due
        assert result["woken"] is True
        key = f"wf:{new.id}:1"
        (row,) = parker.execute("SELECT state FROM jobs WHERE unique_key = ?", (key,))
        assert row[0] == "pending"
    else:
        # the event came first: the park was refused, and the event waits to be taken
        assert result["woken"] is False
        assert ops.take_event(parker, new.id, "paid", seq=1, now=now) is not None


def test_a_park_and_an_event_never_lose_a_wake_up(store: SQLiteStore) -> None:
    """Two connections race a park and an event, many times: whichever wins, the run is never
    left waiting with its event unconsumed."""
    parker = connect(store.path, busy_timeout_ms=5000, check_same_thread=False)
    sender = connect(store.path, busy_timeout_ms=5000, check_same_thread=False)
    try:
        for _ in range(60):
            _race(parker, sender)
    finally:
        parker.close()
        sender.close()
