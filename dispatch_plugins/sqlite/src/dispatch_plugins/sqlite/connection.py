"""Opening and configuring sqlite3 connections, and the write-transaction helper.

Every connection is in autocommit mode (``isolation_level=None``) and configured by
:func:`configure`: the sync producer's and the change watcher's are opened by :func:`connect`,
the async store's by aiosqlite with the same arguments. A single statement is its own
transaction; multi-statement writes say ``BEGIN IMMEDIATE`` themselves through
:func:`write_transaction`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

from dispatch_core.errors import StoreUnavailableError

__all__ = ["connect", "configure", "write_transaction", "unavailable", "translate_errors"]


def connect(
    path: str, *, busy_timeout_ms: int, check_same_thread: bool = True
) -> sqlite3.Connection:
    """Open and configure a connection to the database file ``path``.

    Raises:
        StoreUnavailableError: the file cannot be opened or is not a SQLite database.
    """
    try:
        conn = sqlite3.connect(
            path,
            isolation_level=None,
            check_same_thread=check_same_thread,
            # sqlite3's own timeout is the busy handler; configure() sets it again by pragma.
            timeout=busy_timeout_ms / 1000,
        )
    except sqlite3.Error as exc:
        raise unavailable(path, exc) from exc
    try:
        configure(conn, path, busy_timeout_ms=busy_timeout_ms)
    except BaseException:
        conn.close()
        raise
    return conn


def configure(conn: sqlite3.Connection, path: str, *, busy_timeout_ms: int) -> None:
    """Set the pragmas every connection uses; the first read also proves the file is a database.

    Raises:
        StoreUnavailableError: the file is not a SQLite database, or cannot be read.
    """
    try:
        # busy_timeout first: switching to WAL needs a lock another process may hold.
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        _switch_to_wal(conn, busy_timeout_ms)
        # WAL + NORMAL: commits survive a process crash; only a power loss may lose the last
        # few, and the database is never corrupted.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        # Reading the schema catches files that are not databases even when journal_mode
        # was already WAL.
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    except sqlite3.Error as exc:
        raise unavailable(path, exc) from exc


def _switch_to_wal(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """``PRAGMA journal_mode = WAL``, retried while another connection holds the lock.

    Two connections opening a new file at once race to switch it to WAL, and SQLite may
    answer "database is locked" at once rather than through the busy handler.
    """
    deadline = time.monotonic() + busy_timeout_ms / 1000
    delay = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def unavailable(path: str, exc: BaseException) -> StoreUnavailableError:
    """A :class:`StoreUnavailableError` naming ``path`` and the reason it cannot be used."""
    reason = str(exc) or type(exc).__name__
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        reason = f"directory {directory!r} does not exist ({reason})"
    elif os.path.isdir(path):
        reason = f"it is a directory ({reason})"
    elif os.path.exists(path) and not os.access(path, os.R_OK):
        reason = f"permission denied ({reason})"
    elif isinstance(exc, sqlite3.DatabaseError) and "not a database" in reason:
        reason = f"the file is not a SQLite database or is corrupt ({reason})"
    return StoreUnavailableError(f"cannot use SQLite database {path!r}: {reason}")


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block in a ``BEGIN IMMEDIATE`` transaction; commit, or roll back on error.

    ``IMMEDIATE`` takes the write lock up front (waiting up to ``busy_timeout``), so reads made
    inside the block cannot be invalidated by another writer before the block writes.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@contextmanager
def translate_errors(path: str) -> Iterator[None]:
    """Turn "the database cannot be used" errors into :class:`StoreUnavailableError`.

    Locked past ``busy_timeout``, disk I/O errors, a corrupt file or a missing schema become
    :class:`StoreUnavailableError` naming the file; constraint violations and programming
    errors (``IntegrityError``, ``ProgrammingError``...) propagate unchanged.
    """
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if not (isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError):
            raise
        reason = str(exc)
        if reason.startswith("no such table"):
            reason += " (the schema is missing: run 'await store.migrate()' once)"
        raise StoreUnavailableError(f"SQLite database {path!r}: {reason}") from exc
