"""The blocking producer API on psycopg's ``ConnectionPool``, for code without an event loop."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from dispatch_core.errors import StoreUnavailableError
from dispatch_core.models import Job, NewJob, utcnow
from dispatch_plugins.postgres import ops
from dispatch_plugins.postgres.connection import (
    SyncPool,
    SyncWatchdog,
    WrongConnectionError,
    connect_sync,
    is_retryable,
    make_sync_pool,
    needs_check,
    no_answer,
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
#: See the async store: the same values, for the same reasons.
_PROBE_AFTER = 0.5
_PROBE_FRESH = 1.0


class _DeadConnection(Exception):
    """A pooled connection was found dead before anything was sent on it."""


class PostgresSyncStore:
    """:class:`~dispatch_core.store.SyncStore` for a PostgreSQL schema.

    Safe to share between threads: calls take connections from a ``ConnectionPool`` that is
    opened on first use, once per process (a pool inherited through ``fork()`` is left to the
    parent and a new one is made). After :meth:`close` the next call opens a new pool.
    Failures are handled as in :meth:`PostgresStore._run
    <dispatch_plugins.postgres.runner.PoolRunner._run>`; the deadlines of calls are kept
    by one watchdog thread per store (:class:`~dispatch_plugins.postgres.connection.SyncWatchdog`).

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
        self._watchdog = SyncWatchdog(f"dispatch-postgres deadlines {config.schema}")
        self._down = False
        self._probed_at = -math.inf

    def __repr__(self) -> str:
        return f"PostgresSyncStore({self.config.display!r}, schema={self.config.schema!r})"

    def _get_pool(self) -> SyncPool:
        with self._lock:
            pool = self._pool
            if pool is not None and self._pool_pid == os.getpid():
                return pool
            # One direct connection first, for libpq's reason when the server cannot be used.
            connect_sync(self.config).close()
            self._down, self._probed_at = False, time.monotonic()
            pool = make_sync_pool(self.config, reconnect_failed=self._reconnect_failed)
            try:
                pool.open()
            except psycopg.Error as exc:
                raise unavailable(self.config, exc) from exc
            if self._pool_pid != os.getpid():  # a forked child: the parent's thread is not here
                self._watchdog = SyncWatchdog(self._watchdog.name)
            self._pool, self._pool_pid = pool, os.getpid()
            return pool

    def _call(
        self,
        op: Callable[Concatenate[ops.Statements, _P], ops.Steps[_T]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        pool = self._get_pool()
        limit = self.config.call_timeout
        attempt = dead = 0
        while True:
            attempt += 1
            if self._down:
                self._probe()
            conn = self._getconn(pool)
            guard = self._watchdog.guard(conn, limit)
            try:
                if needs_check(conn):
                    guard.kick()
                    try:
                        conn.execute("")
                    except psycopg.Error:
                        raise _DeadConnection from None
                return run_sync(conn, op(self._q, *args, **kwargs), own=True, guard=guard)
            except _DeadConnection:
                # Nothing was sent on it: safe to go on with another, for writes too.
                self._lost()
                dead += 1
                attempt -= 1
                if dead <= self.config.max_size:
                    continue
                raise StoreUnavailableError(
                    f"cannot use PostgreSQL at {self.config.display}: every pooled "
                    "connection was lost"
                ) from None
            except psycopg.Error as exc:
                if guard.expired:
                    self._lost()
                    raise no_answer(self.config, limit) from exc
                if is_retryable(exc) and attempt < _ROLLBACK_ATTEMPTS:
                    continue
                if conn.broken:
                    # The server restarted since this connection was pooled. A read is safe
                    # to run again on a fresh one.
                    self._lost()
                    if attempt == 1 and op is ops.get_job:
                        continue
                err = store_error(self.config, exc)
                if err is exc:
                    raise
                raise err from exc
            finally:
                guard.stop()
                pool.putconn(conn)

    def _getconn(self, pool: SyncPool) -> psycopg.Connection[Any]:
        """A connection within ``pool_timeout``; after :data:`_PROBE_AFTER` of waiting, fail
        at once if the server cannot be reached."""
        deadline = time.monotonic() + self.config.pool_timeout
        while True:
            left = deadline - time.monotonic()
            try:
                return pool.getconn(timeout=min(left, _PROBE_AFTER))
            except PoolTimeout as exc:
                if left <= _PROBE_AFTER:
                    raise unavailable(self.config, exc) from exc
            if self._down or time.monotonic() - self._probed_at > _PROBE_FRESH:
                self._probe()

    def _probe(self) -> None:
        """Connect to the server directly; raise with libpq's reason when it cannot be
        reached."""
        try:
            connect_sync(self.config).close()
        except StoreUnavailableError:
            self._down = True
            raise
        self._down = False
        self._probed_at = time.monotonic()

    def _lost(self) -> None:
        if time.monotonic() - self._probed_at > _PROBE_FRESH:
            self._down = True

    def _reconnect_failed(self) -> None:
        self._down = True

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
        except psycopg.Error as exc:
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
            self._watchdog.close()
            self._watchdog = SyncWatchdog(self._watchdog.name)
