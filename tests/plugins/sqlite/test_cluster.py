"""SQLite specifics of the cluster operations: the version 2 migration, the one-statement claim
next to queue limits, the limited-queues hint, and limits across real processes."""

from __future__ import annotations

import asyncio
import importlib
import json
import multiprocessing
import random
import sqlite3
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from dispatch_core.models import DLQFilter, Job, Outcome, OutcomeKind, utcnow
from dispatch_core.queues import QueueConfig
from dispatch_core.states import JobState
from dispatch_core.testing import make_new_job
from dispatch_plugins.sqlite import SQLiteStore, ops
from dispatch_plugins.sqlite.connection import connect
from dispatch_plugins.sqlite.migrations import migrate
from dispatch_plugins.sqlite.schema import MIGRATIONS

HERE = Path(__file__).parent


@pytest.fixture
def conn(store: SQLiteStore) -> Iterator[sqlite3.Connection]:
    """A second connection to the store's (migrated) database, for the operations directly."""
    c = connect(store.path, busy_timeout_ms=5000)
    try:
        yield c
    finally:
        c.close()


def _claim(
    conn: sqlite3.Connection,
    hint: ops.LimitedQueues | None,
    limit: int = 10,
    queues: list[str] | None = None,
) -> list[Job]:
    return ops.claim(
        conn,
        worker_id="wkr_t",
        queues=queues,
        names=None,
        limit=limit,
        lease_seconds=30.0,
        now=utcnow(),
        limited=hint,
    )


def _statements(conn: sqlite3.Connection) -> list[str]:
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    return seen


def _indexes(path: str) -> set[str]:
    c = sqlite3.connect(path)
    try:
        return {n for (n,) in c.execute("SELECT name FROM sqlite_schema WHERE type = 'index'")}
    finally:
        c.close()


async def test_a_version_1_database_is_upgraded_in_place(db_url: str, tmp_path: Path) -> None:
    path = str(tmp_path / "jobs.db")
    old = connect(path, busy_timeout_ms=5000)
    try:
        assert migrate(old, path, MIGRATIONS[:1]) == ["0001_initial"]
        jobs = ops.enqueue(old, [make_new_job(queue="q", max_attempts=1) for _ in range(3)])
        # a job a version 1 worker holds, its lease long expired
        old.execute(
            "UPDATE jobs SET state = 'running', attempt = 1, worker_id = 'wkr_old', "
            "attempt_token = 't', started_at = 0, lease_expires_at = 1 WHERE id = ?",
            (jobs[0].id,),
        )
    finally:
        old.close()
    assert {"jobs_lease_idx", "jobs_due_idx"} <= _indexes(path)

    store = SQLiteStore(db_url)
    await store.open()
    try:
        assert await store.migrate() == [m.name for m in MIGRATIONS[1:]]
        indexes = _indexes(path)
        assert not {"jobs_lease_idx", "jobs_due_idx"} & indexes  # dropped by version 2
        assert {"jobs_running_idx", "jobs_finished_idx"} <= indexes
        # the running job claimed before the upgrade is found by rescue and counted
        (stats,) = await store.list_queues(now=utcnow())
        assert (stats.name, stats.depth, stats.running) == ("q", 2, 1)
        (rescued,) = await store.rescue_expired(now=utcnow(), worker_timeout=60)
        assert rescued.id == jobs[0].id
        assert rescued.state is JobState.FAILED
        assert len(await store.list_dlq(DLQFilter())) == 1
    finally:
        await store.close()


async def test_a_claim_without_limited_queues_is_one_statement(
    store: SQLiteStore, conn: sqlite3.Connection
) -> None:
    await store.enqueue([make_new_job(queue=q) for q in ("a", "b", "c") for _ in range(20)])
    await store.pause_queue("b", paused=True)  # a paused queue is not a limited one
    await store.set_queue(QueueConfig(name="c", concurrency=1))
    hint = ops.LimitedQueues()
    assert len(_claim(conn, hint, queues=["a", "b"])) == 10  # reads the hint
    seen = _statements(conn)
    got = _claim(conn, hint, queues=["a", "b"])
    assert [j.queue for j in got] == ["a"] * 10
    assert len(seen) == 1, seen
    assert seen[0].lstrip().startswith("UPDATE jobs")
    # with the capped queue in reach, one write transaction claims around its cap
    seen.clear()
    got = _claim(conn, hint, limit=5)
    assert sorted(j.queue for j in got) == ["c"]  # "a" is drained, "b" paused
    assert seen[0] == "BEGIN IMMEDIATE"
    assert seen[-1] == "COMMIT"


async def test_a_stale_hint_delays_a_limited_queue_but_never_breaks_its_limit(
    store: SQLiteStore, conn: sqlite3.Connection
) -> None:
    await store.enqueue(
        [make_new_job(queue="capped", priority=10) for _ in range(5)]
        + [make_new_job(queue="free") for _ in range(15)]
    )
    hint = ops.LimitedQueues()
    hint.set([])  # fresh, and says that nothing is limited
    await store.set_queue(QueueConfig(name="capped", concurrency=1))  # another connection
    # full claims trust the hint: the capped queue's jobs wait (they are never over-claimed)
    assert [j.queue for j in _claim(conn, hint)] == ["free"] * 10
    # a short claim reads the queues again and takes the capped queue's one allowed job
    got = _claim(conn, hint)
    assert sorted(j.queue for j in got) == ["capped"] + ["free"] * 5
    assert hint.names == {"capped"}
    assert _claim(conn, hint) == []


async def test_next_run_at_finds_the_earliest_job_across_priorities(store: SQLiteStore) -> None:
    rng = random.Random(7)
    t0 = utcnow()
    news = [
        make_new_job(
            rng.choice(["x", "y"]),
            queue=rng.choice(["a", "b", "c"]),
            priority=rng.randint(-5, 5),
            run_at=t0 + timedelta(seconds=rng.randint(-1000, 1000)),
        )
        for _ in range(300)
    ]
    await store.enqueue(news)
    taken = {
        j.id
        for j in await store.claim(
            worker_id="wkr_t", queues=None, names=None, limit=40, lease_seconds=30, now=t0
        )
    }
    waiting = [n for n in news if n.id not in taken]
    for queues, names in [
        (None, None),
        (["a"], None),
        (None, ["y"]),
        (["b", "c"], ["x"]),
        (["d"], None),
    ]:
        want = min(
            (
                n.run_at
                for n in waiting
                if (queues is None or n.queue in queues) and (names is None or n.name in names)
            ),
            default=None,
        )
        assert await store.next_run_at(queues=queues, names=names) == want, (queues, names)


async def test_no_tenant_and_a_tenant_named_null_have_separate_buckets(
    store: SQLiteStore, conn: sqlite3.Connection
) -> None:
    await store.set_queue(QueueConfig(name="m", rate=0.001, burst=1, per_tenant=True))
    await store.enqueue([make_new_job(queue="m", tenant=t) for t in (None, "null", None, "null")])
    got = _claim(conn, None)
    assert sorted(str(j.tenant) for j in got) == ["None", "null"]
    assert _claim(conn, None) == []
    buckets = conn.execute("SELECT tenant, tokens FROM queue_buckets ORDER BY tenant").fetchall()
    assert [t for t, _ in buckets] == ['"null"', "null"]


async def test_list_queues_names_a_queue_whose_jobs_all_finished_long_ago(
    store: SQLiteStore,
) -> None:
    await store.enqueue([make_new_job(queue="old")])
    claimed = await store.claim(
        worker_id="wkr_t",
        queues=None,
        names=None,
        limit=1,
        lease_seconds=30,
        now=utcnow(),
    )
    (job,) = claimed
    outcome = Outcome(
        job_id=job.id, attempt_token=job.attempt_token or "", kind=OutcomeKind.COMPLETED
    )
    assert await store.finish([outcome], now=utcnow() - timedelta(days=3))
    (stats,) = await store.list_queues(now=utcnow())
    assert (stats.name, stats.depth, stats.running, stats.completed_last_minute) == (
        "old",
        0,
        0,
        0,
    )


def _run_limited_workers(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seconds: float
) -> tuple[list[dict[str, list[int] | int]], float]:
    monkeypatch.syspath_prepend(str(HERE))  # spawned children import the helpers by name
    helpers = importlib.import_module("_mp_helpers")
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    outs = [tmp_path / f"limited-{n}.json" for n in range(3)]
    procs = [
        ctx.Process(target=helpers.drain_limited, args=(db_url, n, start, str(out), seconds))
        for n, out in enumerate(outs)
    ]
    for p in procs:
        p.start()
    time.sleep(0.5)  # let the children import and open their stores
    t0 = time.monotonic()
    start.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    return [json.loads(out.read_text()) for out in outs], time.monotonic() - t0


async def _setup(db_url: str, config: QueueConfig, limited: int, free: int) -> None:
    store = SQLiteStore(db_url)
    await store.open()
    await store.migrate()
    try:
        await store.set_queue(config)
        await store.enqueue(
            [make_new_job(queue="limited", priority=5) for _ in range(limited)]
            + [make_new_job(queue="free") for _ in range(free)]
        )
    finally:
        await store.close()


@pytest.mark.slow
def test_a_concurrency_cap_holds_across_processes(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(_setup(db_url, QueueConfig(name="limited", concurrency=2), 300, 300))
    results, _ = _run_limited_workers(db_url, tmp_path, monkeypatch, seconds=1.5)
    seen = [n for r in results for n in r["running_seen"]]  # type: ignore[union-attr]
    assert max(seen) <= 2
    assert max(seen) == 2  # the processes did race for the slots
    assert sum(r["claimed"] for r in results) > 10  # type: ignore[misc]


@pytest.mark.slow
def test_a_rate_limit_holds_across_processes(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rate, burst = 40.0, 4
    asyncio.run(_setup(db_url, QueueConfig(name="limited", rate=rate, burst=burst), 1000, 0))
    results, elapsed = _run_limited_workers(db_url, tmp_path, monkeypatch, seconds=1.0)
    claimed = sum(r["claimed"] for r in results)  # type: ignore[misc]
    assert claimed <= burst + rate * elapsed
    assert claimed >= rate * 0.5  # the bucket did refill
