"""How :class:`~dispatch_plugins.postgres.store.PostgresStore` runs an operation: on a
connection of its pool, within the call's deadline, with probes of the server after an outage
and the retries that are safe.

:class:`PoolRunner` is the store's plumbing, a base class of the store: the store owns the
pool (its :meth:`~dispatch_plugins.postgres.store.PostgresStore.open` makes it, once per
process and event loop) and every operation goes through :meth:`PoolRunner._run`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from dispatch_core.errors import StoreUnavailableError
from dispatch_plugins.postgres import migrations, ops
from dispatch_plugins.postgres.connection import (
    AsyncPool,
    AsyncWatchdog,
    Guard,
    connect_async,
    is_retryable,
    needs_check,
    no_answer,
    run_async,
    store_error,
    timeout_sql,
    unavailable,
)
from dispatch_plugins.postgres.url import PostgresURL

__all__ = ["PoolRunner", "close_at_loop_end", "migrate_op"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: Attempts of a statement rolled back by a deadlock or a serialization failure.
_ROLLBACK_ATTEMPTS = 3
#: Seconds a call waits for a pooled connection before it checks that the server can be
#: reached at all (when it cannot, the call fails then, not after ``pool_timeout``).
_PROBE_AFTER = 0.5
#: Seconds for which a successful probe vouches for the server when a pooled connection is
#: then found dead.
_PROBE_FRESH = 1.0
#: Retention may delete many rows per statement: it gets this many times the timeouts.
_LONG_FACTOR = 6
#: Seconds the pool's custodian waits for the pool's tasks to stop when the event loop ends
#: with the store open (``asyncio.run`` waits for them in any case).
_CUSTODIAN_CLOSE_TIMEOUT = 1.0


class _DeadConnection(Exception):
    """A pooled connection was found dead before anything was sent on it."""


class PoolRunner:
    """Runs operations on the store's pool; the base of
    :class:`~dispatch_plugins.postgres.store.PostgresStore`, which sets these attributes up
    and makes the pool in :meth:`open`."""

    config: PostgresURL
    _q: ops.Statements
    _pool: AsyncPool | None
    _pool_pid: int
    _pool_loop: asyncio.AbstractEventLoop | None
    _watchdog: AsyncWatchdog | None
    _opened: bool
    _down: bool
    _probing: asyncio.Task[str | None] | None
    _probed_at: float

    @abc.abstractmethod
    async def open(self) -> None:
        """Make the pool (see :meth:`PostgresStore.open
        <dispatch_plugins.postgres.store.PostgresStore.open>`)."""

    def _pool_is_ours(self) -> bool:
        """Whether the pool was made by this process, in the running event loop."""
        return (
            self._pool is not None
            and self._pool_pid == os.getpid()
            and self._pool_loop is asyncio.get_running_loop()
        )

    async def _get_pool(self) -> AsyncPool:
        pool = self._pool
        if pool is not None and self._pool_is_ours():
            return pool
        if not self._opened:
            raise StoreUnavailableError(
                f"{self!r} is not open: 'await store.open()' before using it"
            )
        await self.open()  # a forked child, or another event loop: a pool of its own
        assert self._pool is not None
        return self._pool

    async def _run(
        self,
        op: Callable[Concatenate[ops.Statements, _P], ops.Steps[_T]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """Run ``op(statements, *args, **kwargs)`` on a pooled connection.

        A pooled connection found dead before use (the server restarted, or ended it) is
        discarded and the call goes on with another: nothing was sent, so writes are safe to
        run again too. A statement rolled back by a deadlock or serialization failure is run
        again; a read whose connection died under it is run again once on a fresh one; a
        write is not (it may have committed). Each step waits at most ``call_timeout`` for
        the server (six times that, and six times ``statement_timeout``, for retention).
        Driver errors are translated by
        :func:`~dispatch_plugins.postgres.connection.store_error`.

        Raises:
            StoreUnavailableError: the server cannot be reached (found out by a direct
                connection attempt, within ``connect_timeout``), did not answer in time, or
                the connection was lost under a write.
        """
        pool = await self._get_pool()
        watchdog = self._watchdog  # made with the pool, in its event loop
        assert watchdog is not None
        long = op in _LONG
        limit = self.config.call_timeout * (_LONG_FACTOR if long else 1)
        attempt = dead = 0
        while True:
            attempt += 1
            if self._down:
                await self._probe()
            conn = await self._getconn(pool)
            guard = watchdog.guard(conn, limit)
            try:
                if needs_check(conn):
                    guard.kick()
                    try:
                        await conn.execute("")
                    except psycopg.Error:
                        raise _DeadConnection from None
                if long:
                    guard.kick()
                    await conn.execute(timeout_sql(self.config.statement_timeout * _LONG_FACTOR))
                try:
                    return await run_async(
                        conn, op(self._q, *args, **kwargs), own=True, guard=guard
                    )
                finally:
                    if long and not conn.broken:
                        await self._restore_timeout(conn, guard)
            except _DeadConnection:
                # Each idle connection is found dead once: there are at most max_size.
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
                    self._lost()
                    if attempt == 1 and op in _READS:
                        continue
                err = store_error(self.config, exc)
                if err is exc:
                    raise
                raise err from exc
            finally:
                guard.stop()
                await pool.putconn(conn)

    async def _restore_timeout(self, conn: psycopg.AsyncConnection[Any], guard: Guard) -> None:
        """Set ``statement_timeout`` back after a long call, or close the connection (the pool
        then replaces it) rather than return it with the long one."""
        guard.kick()
        try:
            await conn.execute(timeout_sql(self.config.statement_timeout))
        except psycopg.Error:
            await conn.close()

    async def _getconn(self, pool: AsyncPool) -> psycopg.AsyncConnection[Any]:
        """A connection from the pool, within ``pool_timeout``.

        A call that waits more than :data:`_PROBE_AFTER` for one asks the server directly
        (:meth:`_probe`): when it cannot be reached, the call fails at once with libpq's
        reason instead of waiting out ``pool_timeout``.
        """
        deadline = time.monotonic() + self.config.pool_timeout
        while True:
            left = deadline - time.monotonic()
            try:
                return await pool.getconn(timeout=min(left, _PROBE_AFTER))
            except PoolTimeout as exc:
                if left <= _PROBE_AFTER:
                    raise unavailable(self.config, exc) from exc
            # A busy pool makes every waiter come here: one probe a second is enough, unless
            # the pool itself reported that it cannot connect.
            if self._down or time.monotonic() - self._probed_at > _PROBE_FRESH:
                await self._probe()

    async def _probe(self) -> None:
        """Connect to the server directly, once for every call waiting on it (a shared task).

        Raises:
            StoreUnavailableError: it cannot be reached, with libpq's reason.
        """
        loop = asyncio.get_running_loop()
        task = self._probing
        if task is None or task.done() or task.get_loop() is not loop:
            task = self._probing = loop.create_task(
                self._probe_once(), name="dispatch-postgres probe"
            )
        reason = await asyncio.shield(task)
        if reason is not None:
            raise StoreUnavailableError(reason)

    async def _probe_once(self) -> str | None:
        try:
            conn = await connect_async(self.config)
        except StoreUnavailableError as exc:
            self._down = True
            return str(exc)
        await conn.close()
        self._down = False
        self._probed_at = time.monotonic()
        return None

    def _lost(self) -> None:
        """A connection died: check the server before the next call, unless a probe just
        found it up (after a restart, each of the pool's idle connections is found dead in
        turn, and one probe answers for all)."""
        if time.monotonic() - self._probed_at > _PROBE_FRESH:
            self._down = True

    def _reconnect_failed(self) -> None:
        """The pool gave up replacing a connection: the server is unreachable."""
        self._down = True


async def close_at_loop_end(pool: AsyncPool) -> None:
    """Wait until cancelled, then close ``pool`` (a task, made with the pool).

    ``asyncio.run()`` ends by cancelling every task left in its loop and waiting for all of
    them. psycopg_pool's maintenance tasks catch ``CancelledError`` raised while they run a
    job (such as connecting: the pool grows in the background while a first call waits) and
    go back to wait for the next job, so a program whose ``main()`` returned without closing
    the store hung at exit, about one run in ten. Cancelled along with them, this task closes
    the pool, which sends each of them the order to stop that they then wait for.

    Only in the process that made the pool: closing a pool inherited through ``fork()``
    would end its connections, which are the parent's.
    """
    pid = os.getpid()
    try:
        await asyncio.get_running_loop().create_future()
    finally:
        if os.getpid() == pid:
            # pool.close() raises the CancelledError of a maintenance task cancelled while
            # idle, once the stop orders are sent: those are all that is needed here.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await pool.close(timeout=_CUSTODIAN_CLOSE_TIMEOUT)


def migrate_op(q: ops.Statements, where: str) -> ops.Steps[list[str]]:
    """The store's migrate operation (see :func:`~dispatch_plugins.postgres.migrations.migrate`)."""
    return migrations.migrate(q.schema, where)


#: Operations that run with :data:`_LONG_FACTOR` times the timeouts.
_LONG: frozenset[Callable[..., Any]] = frozenset({ops.prune})

#: Operations that only read: safe to run again after a dead pooled connection.
_READS: frozenset[Callable[..., Any]] = frozenset(
    {
        ops.next_run_at,
        ops.get_job,
        ops.list_jobs,
        ops.count_jobs,
        ops.count_runnable,
        ops.throughput,
        ops.list_dlq,
        ops.count_dlq,
        ops.get_dlq,
        ops.list_workers,
        ops.get_leader,
        ops.list_cron,
        ops.get_cron,
        ops.list_queues,
        ops.get_run,
        ops.list_runs,
        ops.list_steps,
        migrate_op,  # re-running is safe: it is idempotent and transactional
    }
)
