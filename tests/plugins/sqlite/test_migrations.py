"""Versioned migrations: idempotent, recorded, safe when processes race."""

from __future__ import annotations

import importlib
import json
import multiprocessing
import sqlite3
from datetime import timedelta
from pathlib import Path

import attrs
import pytest

from dispatch_core._ids import new_id
from dispatch_core.cluster import WorkerInfo
from dispatch_core.errors import JobIdTakenError, StoreUnavailableError
from dispatch_core.models import JobFilter, utcnow
from dispatch_core.states import JobState
from dispatch_core.testing import make_new_job
from dispatch_plugins.sqlite import SQLiteStore, ops
from dispatch_plugins.sqlite.codec import JOB_SELECT, to_us
from dispatch_plugins.sqlite.connection import connect
from dispatch_plugins.sqlite.migrations import LATEST_VERSION, migrate
from dispatch_plugins.sqlite.schema import MIGRATIONS

HERE = Path(__file__).parent


def _rows(path: Path) -> list[tuple[int, str, int]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT version, name, applied_at FROM dispatch_migrations ORDER BY version"
        ).fetchall()
    finally:
        conn.close()


async def test_migrate_applies_once_and_records_each_step(db_url: str, tmp_path: Path) -> None:
    store = SQLiteStore(db_url)
    await store.open()
    try:
        assert await store.migrate() == [m.name for m in MIGRATIONS]
        assert await store.migrate() == []
    finally:
        await store.close()
    other = SQLiteStore(db_url)  # a later process finds the schema current
    await other.open()
    try:
        assert await other.migrate() == []
    finally:
        await other.close()
    rows = _rows(tmp_path / "jobs.db")
    assert [(v, n) for v, n, _ in rows] == [(m.version, m.name) for m in MIGRATIONS]
    assert rows[-1][0] == LATEST_VERSION
    assert all(applied_at > 1_600_000_000_000_000 for _, _, applied_at in rows)  # microseconds


async def test_a_database_from_a_newer_version_is_refused(db_url: str, tmp_path: Path) -> None:
    store = SQLiteStore(db_url)
    await store.open()
    try:
        await store.migrate()
        conn = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
        conn.execute(
            "INSERT INTO dispatch_migrations VALUES (?, 'from_the_future', 0)",
            (LATEST_VERSION + 1,),
        )
        conn.close()
        with pytest.raises(StoreUnavailableError, match="upgrade dispatch-sqlite"):
            await store.migrate()
    finally:
        await store.close()


def _indexes(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name FROM sqlite_schema WHERE type = 'index'").fetchall()
        return {name for (name,) in rows}
    finally:
        conn.close()


async def test_a_version_3_database_gets_tenant_scoped_keys(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    old = connect(str(path), busy_timeout_ms=5000)
    try:
        assert migrate(old, str(path), MIGRATIONS[:3]) == [m.name for m in MIGRATIONS[:3]]
        # Keyed jobs as version 3 wrote them (its ON CONFLICT target is gone from this code).
        plain, acme = ops.enqueue(old, [make_new_job(), make_new_job(tenant="acme")])
        for job_id, key in ((plain.id, "k"), (acme.id, "k2")):
            old.execute("UPDATE jobs SET unique_key = ? WHERE id = ?", (key, job_id))
    finally:
        old.close()
    assert "jobs_unique_key_idx" in _indexes(path)
    store = SQLiteStore(db_url)
    await store.open()
    try:
        assert await store.migrate() == [m.name for m in MIGRATIONS[3:]]
        indexes = _indexes(path)
        assert "jobs_unique_key_idx" not in indexes
        assert {"jobs_unique_key_tenant_idx", "dlq_unreplayed_idx"} <= indexes
        # The keys kept dedupe in their own tenant, and only there.
        (same,) = await store.enqueue([make_new_job(unique_key="k")])
        (other,) = await store.enqueue([make_new_job(unique_key="k", tenant="acme")])
        (same_acme,) = await store.enqueue([make_new_job(unique_key="k2", tenant="acme")])
        assert same.id == plain.id
        assert other.id != plain.id
        assert other.tenant == "acme"
        assert same_acme.id == acme.id
    finally:
        await store.close()


async def test_a_version_4_database_gets_worker_names(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    old = connect(str(path), busy_timeout_ms=5000)
    try:
        assert migrate(old, str(path), MIGRATIONS[:4]) == [m.name for m in MIGRATIONS[:4]]
        # A worker row as version 4 wrote it: it had no names column.
        old.execute(
            "INSERT INTO workers (id, hostname, pid, queues, concurrency, version, started_at,"
            " last_seen, state) VALUES ('wkr_old', 'h', 1, NULL, 4, '0.1', 1, 2, 'running')"
        )
    finally:
        old.close()
    store = SQLiteStore(db_url)
    await store.open()
    try:
        assert await store.migrate() == [m.name for m in MIGRATIONS[4:]]
        assert [(w.id, w.names) for w in await store.list_workers()] == [("wkr_old", None)]
        # Rows written now keep what the worker reported: no names, or some, or none at all.
        now = utcnow()
        new = WorkerInfo(
            id=new_id("wkr"),
            hostname="h",
            pid=2,
            queues=None,
            concurrency=1,
            version="0.2",
            started_at=now,
            last_seen=now,
            names=(),
        )
        for names, write in (((), "register"), (("a", "é.x"), "heartbeat"), (None, "heartbeat")):
            worker = attrs.evolve(new, names=names)
            if write == "register":
                await store.register_worker(worker)
            else:
                await store.heartbeat(
                    worker_id=new.id, leases={}, lease_seconds=30, now=now, worker=worker
                )
            got = {w.id: w.names for w in await store.list_workers()}
            assert got == {"wkr_old": None, new.id: names}, write
    finally:
        await store.close()


@pytest.mark.slow
def test_processes_migrating_at_once_apply_each_step_once(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(HERE))  # spawned children import the helpers by name
    helpers = importlib.import_module("_mp_helpers")

    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    outs = [tmp_path / f"migrate-{i}.json" for i in range(4)]
    procs = [ctx.Process(target=helpers.migrate, args=(db_url, start, str(out))) for out in outs]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    applied = [json.loads(out.read_text()) for out in outs]
    names = [m.name for m in MIGRATIONS]
    assert sorted(applied, key=len) == [[]] * (len(outs) - 1) + [names]
    assert [n for _, n, _ in _rows(tmp_path / "jobs.db")] == names


async def test_a_version_5_database_gets_a_rowid_jobs_table(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    old = connect(str(path), busy_timeout_ms=5000)
    try:
        assert migrate(old, str(path), MIGRATIONS[:5]) == [m.name for m in MIGRATIONS[:5]]
        later = utcnow() + timedelta(hours=1)
        ops.enqueue(
            old,
            [
                make_new_job("a", queue="q", priority=1, headers={"h": "1"}),
                make_new_job("b", queue="q", tenant="acme", unique_key="k", run_at=later),
                make_new_job("c", queue="r", payload={"big": "x" * 100_000}),
                make_new_job("d", queue="r", tenant="acme"),
            ],
        )
        jobs = {j.name: j for j in ops.list_jobs(old, JobFilter())}
        first, keyed, big = jobs["a"], jobs["b"], jobs["c"]
        # As a version 5 worker left them: one completed, one running (this code claims by
        # rowid, which a version 5 table does not have).
        old.execute(
            "UPDATE jobs SET state = 'completed', attempt = 1, started_at = 1, finished_at = 2, "
            "result = '{\"ok\": [1, 2]}' WHERE id = ?",
            (first.id,),
        )
        old.execute(
            "UPDATE jobs SET state = 'running', attempt = 1, worker_id = 'wkr_old', "
            "attempt_token = 't', started_at = 1, lease_expires_at = ? WHERE id = ?",
            (to_us(utcnow()) + 60_000_000, big.id),
        )
        before = old.execute(f"SELECT {JOB_SELECT} FROM jobs ORDER BY id").fetchall()
    finally:
        old.close()
    store = SQLiteStore(db_url)
    await store.open()
    try:
        assert await store.migrate() == [m.name for m in MIGRATIONS[5:]]
        conn = sqlite3.connect(path)
        try:
            # Every row, every column, as it was.
            assert conn.execute(f"SELECT {JOB_SELECT} FROM jobs ORDER BY id").fetchall() == before
            (sql,) = conn.execute("SELECT sql FROM sqlite_schema WHERE name = 'jobs'").fetchone()
            assert "WITHOUT ROWID" not in sql.upper()
            indexes = {
                name
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'jobs'"
                )
            }
        finally:
            conn.close()
        assert indexes == {
            "sqlite_autoindex_jobs_1",  # the primary key on id
            "jobs_claim_idx",
            "jobs_running_idx",
            "jobs_finished_idx",
            "jobs_unique_key_tenant_idx",
        }
        # The running job, the keys, the ids and the claim order carry on.
        assert (await store.get_job(big.id)).state is JobState.RUNNING
        (same,) = await store.enqueue([make_new_job("b", tenant="acme", unique_key="k")])
        assert same.id == keyed.id
        with pytest.raises(JobIdTakenError):
            await store.enqueue([attrs.evolve(make_new_job(), id=first.id)])
        claimed = await store.claim(
            worker_id="wkr_new",
            queues=None,
            names=None,
            limit=5,
            lease_seconds=30,
            now=utcnow(),
        )
        assert [j.name for j in claimed] == ["d"]  # b waits an hour
        counts = await store.count_jobs()
        assert counts == {JobState.COMPLETED: 1, JobState.RUNNING: 2, JobState.PENDING: 1}
    finally:
        await store.close()
