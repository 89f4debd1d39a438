"""The blocking producer API on psycopg's ``ConnectionPool``, for code without an event loop."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg

from dispatch_core.models import Job, NewJob, utcnow
from dispatch_plugins.postgres import operations as ops
from dispatch_plugins.postgres.connection import (
    SyncPool,
    WrongConnectionError,
    connect_sync,
    is_retryable,
    make_sync_pool,
    run_sync,
    store_error,
    unavailable,
    wrong_connection,
)
from dispatch_plugins.postgres.url import PostgresURL

__all__ = ["PostgresSyncStore"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_ROLLBACK_ATTEMPTS = 3


class PostgresSyncStore:
    """:class:`~dispatch_core.store.SyncStore` for a PostgreSQL schema.

    Safe to share between threads: calls take connections from a ``ConnectionPool`` that is
    opened on first use, once per process (a pool inherited through ``fork()`` is left to the
    parent and a new one is made). After :meth:`close` the next call opens a new pool.

    The schema must exist (``await store.migrate()`` once, or ``dispatch migrate``).

    Args:
        config: The store's parsed URL.
    """

    def __init__(self, config: PostgresURL) -> None:
        self.config = config
        self._q = ops.statements(config.schema, not config.worker_synchronous_commit)
        self._lock = threading.Lock()
        self._pool: SyncPool | None = None
        self._pool_pid = 0

    def __repr__(self) -> str:
        return f"PostgresSyncStore({self.config.display!r}, schema={self.config.schema!r})"

    def _get_pool(self) -> SyncPool:
        with self._lock:
            pool = self._pool
            if pool is not None and self._pool_pid == os.getpid():
                return pool
            # One direct connection first, for libpq's reason when the server cannot be used.
            connect_sync(self.config).close()
            pool = make_sync_pool(self.config)
            try:
                pool.open()
            except psycopg.Error as exc:
                raise unavailable(self.config, exc) from exc
            self._pool, self._pool_pid = pool, os.getpid()
            return pool

    def _call(
        self,
        op: Callable[Concatenate[ops.Statements, _P], ops.Steps[_T]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        pool = self._get_pool()
        attempt = 0
        while True:
            attempt += 1
            conn: psycopg.Connection[Any] | None = None
            try:
                with pool.connection() as conn:
                    return run_sync(conn, op(self._q, *args, **kwargs), own=True)
            except psycopg.Error as exc:
                if is_retryable(exc) and attempt < _ROLLBACK_ATTEMPTS:
                    continue
                if conn is not None and conn.broken:
                    # The server restarted since this connection was pooled; the others are
                    # probably dead too. A read is safe to run again on a fresh one.
                    pool.check()
                    if attempt == 1 and op is ops.get_job:
                        continue
                err = store_error(self.config, exc)
                if err is exc:
                    raise
                raise err from exc

    def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Persist ``jobs`` in one transaction; see :meth:`PostgresStore.enqueue`."""
        if not jobs:
            return []
        return self._call(ops.enqueue, jobs)

    def enqueue_in(self, conn: object, jobs: Sequence[NewJob]) -> list[Job]:
        """Write ``jobs`` through the caller's blocking ``psycopg.Connection``, inside the
        caller's transaction (nothing is committed here): a rollback leaves no job, the commit
        makes them visible and wakes the listeners.

        Raises:
            WrongConnectionError: ``conn`` is not a ``psycopg.Connection``.
            JobIdTakenError: a job's chosen id is another tenant's job's; the statement
                failed, so the caller's transaction must be rolled back.
        """
        if not isinstance(conn, psycopg.Connection):
            raise WrongConnectionError(wrong_connection(conn, "psycopg.Connection"))
        if not jobs:
            return []
        try:
            return run_sync(conn, ops.enqueue(self._q, jobs), own=False)
        except (psycopg.OperationalError, psycopg.InterfaceError, psycopg.IntegrityError) as exc:
            err = store_error(self.config, exc)
            if err is exc:
                raise
            raise err from exc

    def get_job(self, job_id: str) -> Job:
        """Return the job or raise :class:`~dispatch_core.errors.JobNotFoundError`."""
        return self._call(ops.get_job, job_id)

    def cancel(self, job_id: str) -> Job:
        """Cancel a pending, retrying or running job, as of now."""
        return self._call(ops.cancel, job_id, now=utcnow())

    def close(self) -> None:
        """Close the pool. Idempotent; a later call opens a new one."""
        with self._lock:
            pool, self._pool = self._pool, None
            ours = self._pool_pid == os.getpid()
        if pool is not None and ours:
            pool.close()
