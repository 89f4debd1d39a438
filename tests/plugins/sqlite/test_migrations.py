"""Versioned migrations: idempotent, recorded, safe when processes race."""

from __future__ import annotations

import importlib
import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from dispatch_core.errors import StoreUnavailableError
from dispatch_plugins.sqlite import SQLiteStore
from dispatch_plugins.sqlite.migrations import LATEST_VERSION
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
