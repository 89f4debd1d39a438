"""Opening, closing, and what happens when the file cannot be used."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dispatch_core.errors import StoreUnavailableError
from dispatch_core.models import utcnow
from dispatch_core.testing import make_new_job
from dispatch_plugins.sqlite import SQLiteStore


async def test_open_sets_wal_and_is_idempotent(db_url: str, tmp_path: Path) -> None:
    store = SQLiteStore(db_url)
    await store.open()
    await store.open()
    try:
        await store.migrate()
        (job,) = await store.enqueue([make_new_job()])
        assert (await store.get_job(job.id)).id == job.id
    finally:
        await store.close()
        await store.close()
    conn = sqlite3.connect(tmp_path / "jobs.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


async def test_a_closed_store_can_be_opened_again(db_url: str) -> None:
    store = SQLiteStore(db_url)
    await store.open()
    await store.migrate()
    (job,) = await store.enqueue([make_new_job()])
    await store.close()
    await store.open()
    try:
        assert (await store.get_job(job.id)).id == job.id
    finally:
        await store.close()


async def test_methods_before_open_raise_a_clear_error(db_url: str) -> None:
    store = SQLiteStore(db_url)
    with pytest.raises(StoreUnavailableError, match=r"not open.*store\.open\(\)"):
        await store.get_job("job_01h455vb4pex5vsknk084sn02q")
    with pytest.raises(StoreUnavailableError, match="not open"):
        await store.claim(
            worker_id="w", queues=None, names=None, limit=1, lease_seconds=1, now=utcnow()
        )


async def test_missing_schema_says_to_migrate(db_url: str) -> None:
    store = SQLiteStore(db_url)
    await store.open()
    try:
        with pytest.raises(StoreUnavailableError, match=r"no such table.*migrate"):
            await store.get_job("job_01h455vb4pex5vsknk084sn02q")
    finally:
        await store.close()


async def _open_fails(url: str) -> StoreUnavailableError:
    before = set(threading.enumerate())
    store = SQLiteStore(url)
    with pytest.raises(StoreUnavailableError) as info:
        await store.open()
    for _ in range(200):  # the aiosqlite thread ends (it may take a moment) rather than leak
        if not set(threading.enumerate()) - before:
            break
        await asyncio.sleep(0.01)
    assert not set(threading.enumerate()) - before
    # the store stays closed and usable for another attempt
    with pytest.raises(StoreUnavailableError, match="not open"):
        await store.get_job("job_01h455vb4pex5vsknk084sn02q")
    return info.value


async def test_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "jobs.db"
    err = await _open_fails(f"sqlite:///{path}")
    assert str(path) in str(err)
    assert "does not exist" in str(err)
    assert not (tmp_path / "nowhere").exists()  # directories are not created


async def test_path_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "jobs.db").mkdir()
    err = await _open_fails(f"sqlite:///{tmp_path / 'jobs.db'}")
    assert str(tmp_path / "jobs.db") in str(err)
    assert "directory" in str(err)


async def test_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    path.write_text("these are my notes, not a database\n" * 200)
    err = await _open_fails(f"sqlite:///{path}")
    assert str(path) in str(err)
    assert "not a SQLite database or is corrupt" in str(err)


async def test_database_with_a_corrupt_header(tmp_path: Path, db_url: str) -> None:
    store = SQLiteStore(db_url)
    await store.open()
    await store.migrate()
    await store.enqueue([make_new_job() for _ in range(50)])
    await store.close()
    path = tmp_path / "jobs.db"
    for leftover in (tmp_path / "jobs.db-wal", tmp_path / "jobs.db-shm"):
        leftover.unlink(missing_ok=True)
    with path.open("r+b") as f:
        f.write(os.urandom(100))  # the 100-byte header, magic string included
    err = await _open_fails(db_url)
    assert str(path) in str(err)
    assert "corrupt" in str(err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
async def test_unreadable_file(tmp_path: Path, db_url: str) -> None:
    path = tmp_path / "jobs.db"
    sqlite3.connect(path).close()
    path.chmod(0)
    try:
        err = await _open_fails(db_url)
    finally:
        path.chmod(0o600)
    assert str(path) in str(err)
    assert "permission denied" in str(err)


async def test_operations_on_a_locked_database_raise_unavailable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}?busy_timeout=50"
    store = SQLiteStore(url)
    await store.open()
    await store.migrate()
    blocker = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # hold the write lock
        with pytest.raises(StoreUnavailableError, match="locked"):
            await store.enqueue([make_new_job(), make_new_job()])
        blocker.execute("ROLLBACK")
        assert len(await store.enqueue([make_new_job(), make_new_job()])) == 2
    finally:
        blocker.close()
        await store.close()


def test_a_program_that_never_closes_the_engine_still_exits(tmp_path: Path) -> None:
    script = tmp_path / "forgetful.py"
    script.write_text(
        "import asyncio\n"
        "from dispatch_core import Engine\n"
        f"engine = Engine('sqlite:///{tmp_path}/f.db')\n"
        "@engine.job(name='x')\n"
        "async def x() -> None: ...\n"
        "async def main() -> None:\n"
        "    await x.aenqueue()\n"
        "    assert (await engine.drain()).completed == 1\n"
        "asyncio.run(main())  # no engine.aclose()\n"
    )
    done = subprocess.run([sys.executable, str(script)], timeout=60, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_connections_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Switching a fresh file to WAL races; the loser must wait, not fail "database is
    locked" (seen 7 times in 200 rounds of four threads before the retry)."""
    from dispatch_plugins.sqlite.connection import connect

    errors: list[BaseException] = []
    for round_no in range(60):
        path = str(tmp_path / f"race{round_no}.db")

        def open_it(path: str = path) -> None:
            try:
                connect(path, busy_timeout_ms=5000).close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
