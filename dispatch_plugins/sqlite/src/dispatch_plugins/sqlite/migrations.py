"""Apply the schema migrations of :mod:`dispatch_plugins.sqlite.schema`.

Each run takes the write lock (``BEGIN IMMEDIATE``) before it reads which versions are applied,
so two processes migrating at once serialise: the second finds everything applied and does
nothing. A database that is already current is recognised without taking the write lock.
"""

from __future__ import annotations

import sqlite3
import time

from dispatch_core.errors import StoreUnavailableError
from dispatch_plugins.sqlite.connection import write_transaction
from dispatch_plugins.sqlite.schema import MIGRATIONS, MIGRATIONS_TABLE, Migration

__all__ = ["migrate", "applied_versions", "LATEST_VERSION"]

#: The schema version this package writes.
LATEST_VERSION = MIGRATIONS[-1].version

_CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
    version    INTEGER NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
)
"""


def applied_versions(conn: sqlite3.Connection) -> set[int]:
    """The migration versions recorded in the database (empty for a fresh file)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (MIGRATIONS_TABLE,)
    ).fetchone()
    if exists is None:
        return set()
    return {v for (v,) in conn.execute(f"SELECT version FROM {MIGRATIONS_TABLE}")}


def migrate(
    conn: sqlite3.Connection, path: str, migrations: tuple[Migration, ...] = MIGRATIONS
) -> list[str]:
    """Apply every migration the database lacks, in order, in one transaction.

    Args:
        conn: An autocommit connection (see :func:`~dispatch_plugins.sqlite.connection.connect`).
        path: The database path, for error messages.
        migrations: The migrations to bring the database to (the default is this package's).

    Returns:
        The names of the migrations applied; empty when the schema was already current.

    Raises:
        StoreUnavailableError: the database was written by a newer dispatch-sqlite.
    """
    known = {m.version for m in migrations}
    if _check(applied_versions(conn), known, path):
        return []  # current: no need for the write lock
    applied: list[str] = []
    with write_transaction(conn):
        conn.execute(_CREATE_TABLE)
        done = applied_versions(conn)  # again, under the lock: another process may have won
        _check(done, known, path)
        for migration in migrations:
            if migration.version in done:
                continue
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                f"INSERT INTO {MIGRATIONS_TABLE} (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time_ns() // 1000),
            )
            applied.append(migration.name)
    return applied


def _check(done: set[int], known: set[int], path: str) -> bool:
    """Whether ``done`` already covers ``known``; raise if the database is from the future."""
    unknown = sorted(done - known)
    if unknown:
        raise StoreUnavailableError(
            f"SQLite database {path!r} has schema version(s) {unknown} that this dispatch-sqlite "
            f"does not know (it knows up to {max(known)}); upgrade dispatch-sqlite"
        )
    return known <= done
