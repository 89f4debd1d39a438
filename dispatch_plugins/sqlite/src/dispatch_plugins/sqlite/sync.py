"""The blocking producer API on stdlib ``sqlite3``, for code without an event loop."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Concatenate, ParamSpec, TypeVar

from dispatch_core.models import Job, NewJob, utcnow
from dispatch_plugins.sqlite import ops
from dispatch_plugins.sqlite.connection import connect, translate_errors
from dispatch_plugins.sqlite.url import SQLiteURL

__all__ = ["SQLiteSyncStore"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class SQLiteSyncStore:
    """:class:`~dispatch_core.store.SyncStore` for a SQLite database.

    Safe to share between threads: one connection (opened on first use, with
    ``check_same_thread=False``) is used under a lock. SQLite has a single writer anyway, so
    a connection per thread would not enqueue faster. After :meth:`close` the next call opens
    a new connection.

    The schema must exist (``await store.migrate()`` once, or ``dispatch migrate``).
    """

    def __init__(self, url: SQLiteURL) -> None:
        self._url = url
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _call(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        with self._lock, translate_errors(self._url.path):
            if self._conn is None:
                self._conn = connect(
                    self._url.path,
                    busy_timeout_ms=self._url.busy_timeout_ms,
                    check_same_thread=False,
                )
            return fn(self._conn, *args, **kwargs)

    def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Persist ``jobs`` in one transaction; see :meth:`SQLiteStore.enqueue`."""
        return self._call(ops.enqueue, jobs)

    def get_job(self, job_id: str) -> Job:
        """Return the job or raise :class:`~dispatch_core.errors.JobNotFoundError`."""
        return self._call(ops.get_job, job_id)

    def cancel(self, job_id: str) -> Job:
        """Cancel a pending, retrying or running job, as of now."""
        return self._call(ops.cancel, job_id, now=utcnow())

    def close(self) -> None:
        """Close the connection. Idempotent; a later call opens a new one."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
