"""Migrations: versioned, idempotent, and safe when several processes run them at once."""

from __future__ import annotations

import importlib
import json
import multiprocessing
from pathlib import Path

import attrs
import psycopg
import pytest

from dispatch_core._ids import new_id
from dispatch_core.cluster import WorkerInfo
from dispatch_core.errors import StoreUnavailableError
from dispatch_core.models import utcnow
from dispatch_core.testing import make_new_job
from dispatch_plugins.postgres import PostgresStore
from dispatch_plugins.postgres.migrations import LATEST_VERSION, lock_key, migrate
from dispatch_plugins.postgres.ops import Statements, Steps
from dispatch_plugins.postgres.schema import MIGRATIONS

from .conftest import DSN

HERE = Path(__file__).parent


ALL_TABLES = {
    "jobs",
    "dlq",
    "dispatch_migrations",
    "workers",
    "leader",
    "cron",
    "queues",
    "queue_buckets",
    "workflow_runs",
    "workflow_steps",
    "workflow_events",
}
ALL_NAMES = [m.name for m in MIGRATIONS]


def _tables(schema: str) -> set[str]:
    with psycopg.connect(DSN) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
        ).fetchall()
    return {name for (name,) in rows}


def _indexes(schema: str) -> set[str]:
    with psycopg.connect(DSN) as conn:
        rows = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,)
        ).fetchall()
    return {name for (name,) in rows}


async def test_migrate_creates_the_schema_once(pg_url: str, schema: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        assert await store.migrate() == [m.name for m in MIGRATIONS]
        assert await store.migrate() == []
    finally:
        await store.close()
    assert _tables(schema) == ALL_TABLES
    assert {
        "jobs_pkey",
        "jobs_claim_idx",
        "jobs_due_idx",
        "jobs_lease_idx",
        "jobs_unique_key_tenant_idx",
        "jobs_queue_idx",
        "jobs_finished_idx",
        "dlq_pkey",
        "dlq_failed_at_idx",
        "dlq_unreplayed_idx",
        "workers_state_idx",
        "workflow_runs_pkey",
        "workflow_runs_state_idx",
        "workflow_runs_name_idx",
        "workflow_runs_tenant_idx",
        "workflow_runs_parent_idx",
        "workflow_runs_correlation_idx",
        "workflow_steps_pkey",
        "workflow_events_pkey",
        "workflow_events_unconsumed_idx",
        "workflow_events_run_idx",
    } <= _indexes(schema)
    assert "jobs_unique_key_idx" not in _indexes(schema)  # replaced by version 4
    with psycopg.connect(DSN) as conn:
        versions = conn.execute(
            f'SELECT version, name FROM "{schema}".dispatch_migrations'
        ).fetchall()
    assert versions == [(m.version, m.name) for m in MIGRATIONS]
    # a second store on the same schema finds it current
    other = PostgresStore(pg_url)
    await other.open()
    try:
        assert await other.migrate() == []
    finally:
        await other.close()


async def test_the_schema_may_already_exist(pg_url: str, schema: str) -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".unrelated (x int)')
    store = PostgresStore(pg_url)
    await store.open()
    try:
        assert await store.migrate() == ALL_NAMES
    finally:
        await store.close()
    assert "unrelated" in _tables(schema)


async def test_a_schema_from_a_newer_version_is_refused(pg_url: str, schema: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        await store.migrate()
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(
                f'INSERT INTO "{schema}".dispatch_migrations (version, name) VALUES (%s, %s)',
                (LATEST_VERSION + 1, "9999_future"),
            )
        with pytest.raises(
            StoreUnavailableError, match=rf"version\(s\) \[{LATEST_VERSION + 1}\].*upgrade"
        ):
            await store.migrate()
    finally:
        await store.close()


async def test_a_version_1_schema_is_upgraded_with_its_jobs(pg_url: str, schema: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        # The schema as dispatch-postgres 0.1 left it, with a job in it.
        assert await store._run(_migrate_to, 1) == ["0001_initial"]
        (job,) = await store.enqueue([make_new_job(queue="emails")])
        assert await store.migrate() == ALL_NAMES[1:]
        assert (await store.get_job(job.id)).queue == "emails"
        assert [s.name for s in await store.list_queues(now=utcnow())] == ["emails"]
    finally:
        await store.close()


async def test_a_version_3_schema_gets_tenant_scoped_keys(pg_url: str, schema: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        assert await store._run(_migrate_to, 3) == ALL_NAMES[:3]
        # Keyed jobs as version 3 wrote them (its ON CONFLICT target is gone from this code).
        plain, acme = await store.enqueue([make_new_job(), make_new_job(tenant="acme")])
        with psycopg.connect(DSN, autocommit=True) as conn:
            for job_id, key in ((plain.id, "k"), (acme.id, "k2")):
                conn.execute(
                    f'UPDATE "{schema}".jobs SET unique_key = %s WHERE id = %s', (key, job_id)
                )
        assert "jobs_unique_key_idx" in _indexes(schema)
        assert await store.migrate() == ALL_NAMES[3:]
        indexes = _indexes(schema)
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


async def test_a_version_4_schema_gets_worker_names(pg_url: str, schema: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        assert await store._run(_migrate_to, 4) == ALL_NAMES[:4]
        # A worker row as version 4 wrote it: it had no names column.
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(
                f'INSERT INTO "{schema}".workers (id, hostname, pid, queues, concurrency, '
                "version, started_at, last_seen, state) "
                "VALUES ('wkr_old', 'h', 1, NULL, 4, '0.1', now(), now(), 'running')"
            )
        assert await store.migrate() == ALL_NAMES[4:]
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


def _migrate_to(q: Statements, version: int) -> Steps[list[str]]:
    wanted = tuple(m for m in MIGRATIONS if m.version <= version)
    return migrate(q.schema, "test", wanted)


def test_lock_keys_are_stable_and_per_schema() -> None:
    assert lock_key("dispatch") == lock_key("dispatch")
    assert lock_key("dispatch") != lock_key("other")
    assert -(2**63) <= lock_key("dispatch") < 2**63


@pytest.mark.slow
def test_four_processes_migrating_at_once(
    pg_url: str, schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(HERE))  # spawned children import the helpers by name
    helpers = importlib.import_module("_mp_helpers")
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    outs = [tmp_path / f"migrate-{n}.json" for n in range(4)]
    procs = [ctx.Process(target=helpers.migrate, args=(pg_url, start, str(o))) for o in outs]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    results = [json.loads(o.read_text()) for o in outs]
    assert sorted(results) == [[], [], [], ALL_NAMES]
    assert _tables(schema) == ALL_TABLES
