"""Connections and pools, the runners of :mod:`~dispatch_plugins.postgres.ops`, and the
translation of driver errors into Dispatch's.

The store's connections are autocommit (one statement, one transaction, one round trip) and
use the UTC session time zone, so times come back in UTC without conversion. Pools are made
here but owned by the stores, which open them lazily and once per process.

Every wait for the server is bounded three ways. The server cancels a statement of the store
after ``statement_timeout`` (and ends a session idle in a transaction); TCP keepalives and
``tcp_user_timeout`` (libpq parameters, see :mod:`~dispatch_plugins.postgres.url`) make the
kernel drop a connection whose peer vanished. Neither helps when the server's host is up but
the server does not answer (a stopped process, a proxy that accepts and forwards nothing: the
kernel acknowledges every packet), so a *deadline* guards each step of a call on the store's
own connections: a step still waiting for the server after ``call_timeout`` seconds has its
socket shut down (:func:`sever`), which fails the step at once with a connection error and
gets the connection discarded by the pool.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from contextlib import AsyncExitStack, ExitStack
from typing import Any, Protocol, TypeVar, cast

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from dispatch_core.errors import (
    ConfigurationError,
    DispatchError,
    JobIdTakenError,
    StoreUnavailableError,
)
from dispatch_plugins.postgres.ops.common import TRANSACTION, Copy, Steps, Stmt
from dispatch_plugins.postgres.url import PostgresURL

__all__ = [
    "run_async",
    "run_sync",
    "connect_async",
    "connect_sync",
    "make_async_pool",
    "make_sync_pool",
    "session_sql",
    "timeout_sql",
    "needs_check",
    "sever",
    "Guard",
    "AsyncDeadline",
    "AsyncWatchdog",
    "SyncWatchdog",
    "POOL_RECONNECT_TIMEOUT",
    "unavailable",
    "no_answer",
    "store_error",
    "PostgresLimitError",
    "PostgresTimeoutError",
    "is_retryable",
    "AsyncPool",
    "SyncPool",
    "WrongConnectionError",
    "wrong_connection",
]


T = TypeVar("T")
AsyncPool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]
SyncPool = ConnectionPool[psycopg.Connection[Any]]

# Session settings of the store's own connections. UTC: times come back as UTC datetimes with
# no conversion. enable_sort=off: every statement of ours has an index that delivers its order,
# and with it the claim always walks jobs_claim_idx in claim order and stops after LIMIT rows.
# Otherwise the planner, misled by statistics taken when few jobs were runnable (a fresh table,
# or a burst after a quiet spell), may fetch every runnable job and sort them on each claim:
# milliseconds per claim for a backlog of a few thousand jobs, seconds for millions.
# jit=off: every statement of ours touches a few rows, and JIT compilation costs tens to
# hundreds of milliseconds; the planner starts it on estimated cost alone, and costs run high
# for reasons that have nothing to do with the work (a disabled sort adds 10^10 to a plan, a
# never-analysed table is assumed to have hundreds of rows).
# plan_cache_mode=force_generic_plan: a statement prepared by psycopg (after
# prepare_threshold uses) is planned once, not again on each execution. Our statements have
# one good plan whatever their parameters (the index order above); left to itself, the server
# may keep re-planning one (a third of a millisecond for the claim) because the parameters
# make a custom plan's estimate look cheaper.
_SESSION = (
    "SET TIME ZONE 'UTC'; SET enable_sort = off; SET jit = off; "
    "SET plan_cache_mode = force_generic_plan"
)

#: psycopg_pool's ``reconnect_timeout``: how long the pool keeps trying to replace a lost
#: connection. Its retries back off exponentially from 1 s (1, 2, 4, 8 s...: not tunable),
#: and a connection slot stays taken while its retry sleeps, so after an outage of a few
#: seconds a pool with the default (5 minutes) reconnected up to ten seconds after the server
#: was back. With 0.5 s the pool tries once at once and once 0.5 s later, then gives the slot
#: up (and tells the store, through ``reconnect_failed``, that the server is unreachable);
#: the next call that finds no idle connection grows the pool again, at once.
POOL_RECONNECT_TIMEOUT = 0.5
#: Rows of a ``COPY`` between two renewals of its deadline: a bulk enqueue is bounded by the
#: server's progress, not by its total length.
_COPY_KICK_ROWS = 1000


def _ms(seconds: float) -> int:
    """``seconds`` as whole milliseconds for a server setting: a positive value stays > 0
    (0 would mean "no limit"), and none exceeds what the server takes (INT_MAX)."""
    return min(max(1, math.ceil(seconds * 1000)), 2**31 - 1) if seconds > 0 else 0


def timeout_sql(seconds: float) -> str:
    """A statement that sets the session's ``statement_timeout`` to ``seconds`` (0: none)."""
    return f"SET statement_timeout = {_ms(seconds)}"


def session_sql(config: PostgresURL) -> str:
    """The settings every connection of the store starts with: :data:`_SESSION` and the
    server-side timeouts of ``config`` (milliseconds; 0 is no limit)."""
    return (
        f"{_SESSION}; {timeout_sql(config.statement_timeout)}; "
        f"SET lock_timeout = {_ms(config.lock_timeout)}; "
        "SET idle_in_transaction_session_timeout = "
        f"{_ms(config.idle_in_transaction_session_timeout)}"
    )


#: Lifts the server's statement clock for the rest of the transaction: a ``COPY`` is paced by
#: the client (its rows are encoded as they are sent), a migration's index build by the table.
_UNBOUNDED = "SELECT set_config('statement_timeout', '0', true)"


def _unbounded(step: object) -> bool:
    """Whether ``step`` runs without the server's statement clock (see :data:`_UNBOUNDED`)."""
    return isinstance(step, Copy) or (isinstance(step, Stmt) and step.unbounded)


# -- deadlines -------------------------------------------------------------------------------


def sever(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Shut the connection's socket down (both ways), from any thread.

    A step waiting for the server then fails at once ("server closed the connection
    unexpectedly"), psycopg marks the connection broken, and the pool discards it. The socket
    is shut down through a duplicate of its descriptor, so the descriptor itself stays libpq's
    to close: nothing can reuse it while psycopg still waits on it.
    """
    try:
        fd = conn.pgconn.socket
    except psycopg.Error:
        return  # already closed
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone


class Guard(Protocol):
    """The deadline of one call on one connection (see :func:`run_async`)."""

    #: Whether the deadline passed and the connection was severed.
    expired: bool

    def kick(self, seconds: float | None = None) -> None:
        """Start the clock again: ``seconds`` (default: the guard's limit) from now; 0
        stops it."""

    def stop(self) -> None:
        """Stop the clock (the call is over)."""


class AsyncDeadline:
    """A :class:`Guard` on the event loop with a timer of its own: :func:`sever` the
    connection when a step has waited ``limit`` seconds (0: never). For one long-lived
    connection (the listener's); the store's calls share an :class:`AsyncWatchdog`.

    A kick only moves the due time, and a timer that fires before it sets itself again, so
    a call of many steps costs one ``call_at`` and one ``cancel``.
    """

    __slots__ = ("_at", "_handle", "_loop", "conn", "expired", "limit")

    def __init__(self, conn: psycopg.AsyncConnection[Any], limit: float) -> None:
        self.conn = conn
        self.limit = limit
        self.expired = False
        self._at = math.inf
        self._handle: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    def kick(self, seconds: float | None = None) -> None:
        seconds = self.limit if seconds is None else seconds
        if seconds <= 0 or self.expired:
            self._at = math.inf
            return
        self._at = self._loop.time() + seconds
        if self._handle is None:
            self._handle = self._loop.call_at(self._at, self._due)

    def stop(self) -> None:
        self._at = math.inf
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _due(self) -> None:
        self._handle = None
        if self._at == math.inf:
            return  # stopped for an unbounded step; the next kick sets a timer again
        if self._loop.time() < self._at:
            self._handle = self._loop.call_at(self._at, self._due)
            return
        self.expired = True
        sever(self.conn)


class _AsyncCall:
    """The :class:`Guard` of one call, kept by an :class:`AsyncWatchdog`."""

    __slots__ = ("_watchdog", "conn", "expired", "limit")

    def __init__(
        self, watchdog: AsyncWatchdog, conn: psycopg.AsyncConnection[Any], limit: float
    ) -> None:
        self.conn = conn
        self.limit = limit
        self.expired = False
        self._watchdog = watchdog

    def kick(self, seconds: float | None = None) -> None:
        seconds = self.limit if seconds is None else seconds
        watchdog = self._watchdog
        if seconds > 0 and not self.expired:
            watchdog.arm(self, watchdog.loop.time() + seconds)
        else:
            watchdog.arm(self, None)

    def stop(self) -> None:
        self._watchdog.arm(self, None)


class AsyncWatchdog:
    """The :class:`Guard` maker of the async store: one timer on the event loop for all of
    its calls, instead of one ``call_at`` and one ``cancel`` per call.

    A call's guard only records its due time, and drops it when the call ends. The timer is
    set for the earliest due time and moved only when a call is due before it; when it fires
    it severs the connections whose deadline passed and sets itself for the next due time,
    if any. Calls of a busy store share one limit, so each is due after the ones before it:
    the timer stays where it is and fires about once per limit.

    Args:
        loop: The event loop of the calls (the store's pool's).
    """

    __slots__ = ("_armed", "_handle", "_timer_at", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._armed: dict[_AsyncCall, float] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def guard(self, conn: psycopg.AsyncConnection[Any], limit: float) -> Guard:
        """A guard for one call on ``conn`` (``limit`` seconds per step; 0: none)."""
        return _AsyncCall(self, conn, limit)

    def arm(self, deadline: _AsyncCall, at: float | None) -> None:
        """Sever ``deadline.conn`` at loop time ``at`` (``None``: never)."""
        if at is None:
            self._armed.pop(deadline, None)
            return
        self._armed[deadline] = at
        if at < self._timer_at:  # due before the timer: bring it forward
            if self._handle is not None:
                self._handle.cancel()
            self._handle = self.loop.call_at(at, self._due)
            self._timer_at = at

    def close(self) -> None:
        """Stop the timer (idempotent); calls still running are no longer bounded."""
        if self._handle is not None:
            self._handle.cancel()
        self._handle, self._timer_at = None, math.inf
        self._armed.clear()

    def _due(self) -> None:
        self._handle, self._timer_at = None, math.inf
        now = self.loop.time()
        expired = [deadline for deadline, at in self._armed.items() if at <= now]
        for deadline in expired:
            del self._armed[deadline]
            deadline.expired = True
            sever(deadline.conn)
        if self._armed:
            at = min(self._armed.values())
            self._handle = self.loop.call_at(at, self._due)
            self._timer_at = at


class _SyncDeadline:
    __slots__ = ("_watchdog", "conn", "expired", "limit")

    def __init__(self, watchdog: SyncWatchdog, conn: psycopg.Connection[Any], limit: float):
        self.conn = conn
        self.limit = limit
        self.expired = False
        self._watchdog = watchdog

    def kick(self, seconds: float | None = None) -> None:
        seconds = self.limit if seconds is None else seconds
        self._watchdog.arm(self, time.monotonic() + seconds if seconds > 0 else None)

    def stop(self) -> None:
        self._watchdog.arm(self, None)


class SyncWatchdog:
    """The :class:`Guard` maker of the blocking store: one daemon thread that severs the
    connections whose deadline passed. Started on first use; a forked child makes its own.

    Args:
        name: The thread's name.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        # A plain lock, taken directly by arm(): no Python-level __enter__ on every call.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._armed: dict[_SyncDeadline, float] = {}
        self._wake_at = math.inf
        self._thread: threading.Thread | None = None
        self._closed = False

    def guard(self, conn: psycopg.Connection[Any], limit: float) -> Guard:
        """A guard for one call on ``conn`` (``limit`` seconds per step; 0: none)."""
        return _SyncDeadline(self, conn, limit)

    def arm(self, deadline: _SyncDeadline, at: float | None) -> None:
        """Sever ``deadline.conn`` at monotonic time ``at`` (``None``: never)."""
        with self._lock:
            if at is None:
                self._armed.pop(deadline, None)
                return
            self._armed[deadline] = at
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            if at < self._wake_at:  # the thread sleeps past it: wake it up
                self._cond.notify()

    def close(self) -> None:
        """Stop the thread (idempotent)."""
        with self._cond:
            self._closed = True
            self._armed.clear()
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                for deadline, at in list(self._armed.items()):
                    if at <= now:
                        del self._armed[deadline]
                        deadline.expired = True
                        sever(deadline.conn)
                self._wake_at = min(self._armed.values(), default=math.inf)
                self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)
            self._thread = None


_poll = getattr(select, "poll", None)


def needs_check(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle pooled connection must be tested before use, decided without a round
    trip: it is closed or broken, or its socket is readable. An idle connection of the store
    receives nothing unless the server is ending it (a restart, ``pg_terminate_backend``: an
    error message, then end of file), or, rarely, sends a notice or a parameter change."""
    if conn.closed:  # a broken connection is closed too
        return True
    try:
        fd = conn.pgconn.socket
        if _poll is not None:
            poller = _poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([fd], [], [], 0)[0])  # pragma: no cover (Windows)
    except (psycopg.Error, OSError, ValueError):
        return True


# -- running operations ----------------------------------------------------------------------


async def run_async(
    conn: psycopg.AsyncConnection[Any],
    steps: Steps[T],
    *,
    own: bool,
    guard: Guard | None = None,
) -> T:
    """Run an operation's steps on ``conn``.

    Args:
        conn: An open async connection.
        steps: The operation's generator, not started.
        own: ``conn`` is one of the store's (autocommit) connections, so a
            :data:`~dispatch_plugins.postgres.ops.common.TRANSACTION` marker opens a transaction;
            on a caller's connection the marker is ignored and nothing is committed.
        guard: The call's deadline (own connections only), started again for each step and
            for the commit; stopped for an ``unbounded`` statement, and renewed every
            :data:`_COPY_KICK_ROWS` rows of a ``COPY``. The server's ``statement_timeout`` is
            lifted for the rest of the transaction before either.
    """
    async with AsyncExitStack() as stack:
        sent: Any = None
        in_transaction = lifted = False
        while True:
            try:
                step = steps.send(sent)
            except StopIteration as stop:
                if guard is not None and in_transaction:
                    guard.kick()  # the commit, when the stack closes the transaction
                return cast(T, stop.value)
            if guard is not None:
                guard.kick()
            if own and not lifted and _unbounded(step):
                assert in_transaction, "an unbounded step runs inside a TRANSACTION"
                await conn.execute(_UNBOUNDED)
                lifted = True
            if isinstance(step, Stmt):
                if step.unbounded and guard is not None:
                    guard.kick(0)
                cur = await conn.execute(step.sql, step.params, binary=True)
                sent = await cur.fetchall() if step.rows else cur.rowcount
            elif isinstance(step, Copy):
                async with conn.cursor() as cur, cur.copy(step.sql) as copy:
                    copy.set_types(list(step.types))
                    for i, row in enumerate(step.rows, 1):
                        await copy.write_row(row)
                        if guard is not None and not i % _COPY_KICK_ROWS:
                            guard.kick()
                    if guard is not None:
                        guard.kick()  # the end of the COPY: the server writes what is left
                sent = None
            else:
                assert step is TRANSACTION
                if own:
                    await stack.enter_async_context(conn.transaction())
                    in_transaction = True
                sent = None


def run_sync(
    conn: psycopg.Connection[Any],
    steps: Steps[T],
    *,
    own: bool,
    guard: Guard | None = None,
) -> T:
    """The blocking twin of :func:`run_async`."""
    with ExitStack() as stack:
        sent: Any = None
        in_transaction = lifted = False
        while True:
            try:
                step = steps.send(sent)
            except StopIteration as stop:
                if guard is not None and in_transaction:
                    guard.kick()  # the commit
                return cast(T, stop.value)
            if guard is not None:
                guard.kick()
            if own and not lifted and _unbounded(step):
                assert in_transaction, "an unbounded step runs inside a TRANSACTION"
                conn.execute(_UNBOUNDED)
                lifted = True
            if isinstance(step, Stmt):
                if step.unbounded and guard is not None:
                    guard.kick(0)
                cur = conn.execute(step.sql, step.params, binary=True)
                sent = cur.fetchall() if step.rows else cur.rowcount
            elif isinstance(step, Copy):
                with conn.cursor() as cur, cur.copy(step.sql) as copy:
                    copy.set_types(list(step.types))
                    for i, row in enumerate(step.rows, 1):
                        copy.write_row(row)
                        if guard is not None and not i % _COPY_KICK_ROWS:
                            guard.kick()
                    if guard is not None:
                        guard.kick()
                sent = None
            else:
                assert step is TRANSACTION
                if own:
                    stack.enter_context(conn.transaction())
                    in_transaction = True
                sent = None


# -- connections and pools -------------------------------------------------------------------


def _connect_kwargs(config: PostgresURL) -> dict[str, Any]:
    return {"autocommit": True, "prepare_threshold": config.prepare_threshold}


async def connect_async(config: PostgresURL) -> psycopg.AsyncConnection[Any]:
    """Open one configured autocommit connection (the listener's, or a probe of the server).

    Raises:
        StoreUnavailableError: the server cannot be reached or refuses us; the message names
            ``user@host:port/dbname`` and libpq's reason.
    """
    try:
        conn = await psycopg.AsyncConnection.connect(config.conninfo, **_connect_kwargs(config))
    except psycopg.Error as exc:
        raise unavailable(config, exc) from exc
    try:
        await conn.execute(session_sql(config))
    except psycopg.Error as exc:
        await conn.close()
        raise unavailable(config, exc) from exc
    return conn


def connect_sync(config: PostgresURL) -> psycopg.Connection[Any]:
    """The blocking twin of :func:`connect_async`."""
    try:
        conn = psycopg.Connection.connect(config.conninfo, **_connect_kwargs(config))
    except psycopg.Error as exc:
        raise unavailable(config, exc) from exc
    try:
        conn.execute(session_sql(config))
    except psycopg.Error as exc:
        conn.close()
        raise unavailable(config, exc) from exc
    return conn


def make_async_pool(config: PostgresURL, *, reconnect_failed: Callable[[], None]) -> AsyncPool:
    """An unopened async pool for ``config`` (``await pool.open()`` it in the loop that uses
    it).

    Args:
        config: The store's parsed URL.
        reconnect_failed: Called when the pool gave up replacing a lost connection
            (:data:`POOL_RECONNECT_TIMEOUT`): the server is unreachable.
    """
    session = session_sql(config)

    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(session)

    return AsyncConnectionPool(
        config.conninfo,
        kwargs=_connect_kwargs(config),
        min_size=config.min_size,
        max_size=config.max_size,
        timeout=config.pool_timeout,
        configure=configure,
        reconnect_timeout=POOL_RECONNECT_TIMEOUT,
        reconnect_failed=lambda _pool: reconnect_failed(),
        name=f"dispatch-{config.schema}",
        open=False,
    )


def make_sync_pool(config: PostgresURL, *, reconnect_failed: Callable[[], None]) -> SyncPool:
    """An unopened blocking pool for ``config``; see :func:`make_async_pool`."""
    session = session_sql(config)

    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.execute(session)

    return ConnectionPool(
        config.conninfo,
        kwargs=_connect_kwargs(config),
        min_size=config.min_size,
        max_size=config.max_size,
        timeout=config.pool_timeout,
        configure=configure,
        reconnect_timeout=POOL_RECONNECT_TIMEOUT,
        reconnect_failed=lambda _pool: reconnect_failed(),
        name=f"dispatch-{config.schema}-sync",
        open=False,
    )


# -- errors ----------------------------------------------------------------------------------


def _reason(config: PostgresURL, exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # libpq's messages run over several lines ("Is the server running on that host..."); keep
    # them, on one line.
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return config.scrub(text)


def unavailable(config: PostgresURL, exc: BaseException) -> StoreUnavailableError:
    """A :class:`StoreUnavailableError` naming the server (never the password) and why it
    cannot be used."""
    return StoreUnavailableError(
        f"cannot use PostgreSQL at {config.display}: {_reason(config, exc)}{_hint(config, exc)}"
    )


def no_answer(config: PostgresURL, seconds: float) -> StoreUnavailableError:
    """The error of a call whose deadline passed (the connection was dropped)."""
    return StoreUnavailableError(
        f"cannot use PostgreSQL at {config.display}: no answer within {seconds:g}s "
        "(call_timeout); the connection was dropped"
    )


def _hint(config: PostgresURL, exc: BaseException) -> str:
    """Which setting of the URL stopped a statement, and how to change it."""
    primary = getattr(getattr(exc, "diag", None), "message_primary", None) or ""
    if isinstance(exc, pg_errors.QueryCanceled) and "statement timeout" in primary:
        return (
            f" (the store's statement_timeout is {config.statement_timeout:g}s: "
            "raise it with ?statement_timeout=<seconds> in the store URL)"
        )
    if isinstance(exc, pg_errors.LockNotAvailable) and "lock timeout" in primary:
        return (
            f" (the store's lock_timeout is {config.lock_timeout:g}s: "
            "raise it with ?lock_timeout=<seconds> in the store URL)"
        )
    if isinstance(exc, pg_errors.IdleInTransactionSessionTimeout):
        return (
            " (the session sat idle in a transaction longer than the store's "
            f"idle_in_transaction_session_timeout, {config.idle_in_transaction_session_timeout:g}s)"
        )
    return ""


class PostgresLimitError(DispatchError, ValueError):
    """PostgreSQL refused a statement of the store because something in it is over one of
    the server's fixed limits (SQLSTATE class 54, "program limit exceeded": a ``jsonb``
    value or string over 256 MB, a value nested too deeply...).

    The same call fails the same way every time, so it is not an outage: a worker does not
    keep an outcome refused so for a later try, it records a failure in its place.
    """


class PostgresTimeoutError(StoreUnavailableError, TimeoutError):
    """The server cancelled a statement of the store that ran longer than the store's
    ``statement_timeout``, or that waited longer than its ``lock_timeout`` for a lock.

    A :class:`~dispatch_core.errors.StoreUnavailableError`: the server is up but did not get
    the work done in time (load, a lock held by another session), and the same call may
    well succeed later; the message names the setting to raise.
    """


#: SQLSTATE classes of errors that say the server cannot be used right now, whatever the
#: statement: 08 connection exception; 53 insufficient resources (too many connections, disk
#: full, out of memory); 58 system error (I/O error on the server); 40 transaction rollback
#: (a deadlock or serialization failure, once the store's own retries are used up).
_UNAVAILABLE_CLASSES = frozenset({"08", "40", "53", "58"})
#: Single SQLSTATEs of the same meaning: 57000 operator intervention; 57P01 admin shutdown,
#: 57P02 crash shutdown, 57P03 cannot connect now (starting up, shutting down, in recovery);
#: 57P04 database dropped; the session ended by the server for idling (57P05), for idling in
#: a transaction (25P03) or for a transaction that ran too long (25P04); 57014 a statement
#: cancelled on request (``pg_cancel_backend``: an operator, not the statement); 55P03 a lock
#: not obtained (``lock_timeout``).
_UNAVAILABLE_STATES = frozenset(
    {"57000", "57P01", "57P02", "57P03", "57P04", "57P05", "25P03", "25P04", "57014", "55P03"}
)
#: The SQLSTATE class of statements over a limit of the server: see :class:`PostgresLimitError`.
_LIMIT_CLASS = "54"

_MISSING_SCHEMA = (pg_errors.UndefinedTable, pg_errors.InvalidSchemaName)
# The detail of a primary key violation on jobs: ids hold no spaces, so the match is exact.
_KEY_DETAIL = re.compile(r"Key \(id\)=\((\S+)\) already exists\.")


def store_error(config: PostgresURL, exc: psycopg.Error) -> Exception:
    """The error to raise for a driver error met by an operation.

    By SQLSTATE, not by the driver's exception class (psycopg makes an ``OperationalError``
    of a server restart and of a value over a limit alike):

    * a statement cancelled by the store's ``statement_timeout`` or ``lock_timeout``:
      :class:`PostgresTimeoutError`, which says so and names the setting;
    * the server cannot be used right now (connection refused or lost, no SQLSTATE at all;
      shutting down, restarting, out of connections or resources; the session ended; a
      deadlock once the store's retries are used up): :class:`StoreUnavailableError`, an
      outage the caller may retry;
    * a missing schema: :class:`StoreUnavailableError` that says to migrate;
    * a value over a limit of the server (class 54): :class:`PostgresLimitError`, never an
      outage: the same call fails again;
    * a job id already taken (``jobs_pkey``: a chosen id another tenant's job has):
      :class:`JobIdTakenError`;
    * anything else (a constraint, a bad value, any other failure of the statement itself)
      is returned unchanged.
    """
    taken = _taken_job_id(exc)
    if taken is not None:
        return JobIdTakenError(taken)
    if isinstance(exc, _MISSING_SCHEMA):
        return StoreUnavailableError(
            f"PostgreSQL at {config.display}: {_reason(config, exc)} (the schema "
            f"{config.schema!r} is missing or incomplete: run 'await store.migrate()' once)"
        )
    state = exc.sqlstate
    if state is None:  # raised by libpq or psycopg, not the server: the connection failed
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return unavailable(config, exc)
        return exc
    if _timed_out(exc):
        return PostgresTimeoutError(
            f"PostgreSQL at {config.display} timed out: {_reason(config, exc)}{_hint(config, exc)}"
        )
    if state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES:
        return unavailable(config, exc)
    if state[:2] == _LIMIT_CLASS:
        return PostgresLimitError(
            f"PostgreSQL at {config.display} refused the statement: {_reason(config, exc)} "
            f"(SQLSTATE {state}: over a limit of the server, so it fails the same way on "
            "every try)"
        )
    return exc


def _timed_out(exc: psycopg.Error) -> bool:
    """Whether the server cancelled the statement for the store's ``statement_timeout`` or
    ``lock_timeout`` (the same SQLSTATEs also stand for a cancel request and ``NOWAIT``)."""
    primary = exc.diag.message_primary or ""
    if isinstance(exc, pg_errors.QueryCanceled):
        return "statement timeout" in primary
    return isinstance(exc, pg_errors.LockNotAvailable) and "lock timeout" in primary


def _taken_job_id(exc: psycopg.Error) -> str | None:
    """The id of a job insert refused by the primary key, from the server's detail
    (``Key (id)=(job_x) already exists.``); ``None`` for any other error."""
    if not isinstance(exc, pg_errors.UniqueViolation) or exc.diag.constraint_name != "jobs_pkey":
        return None
    found = _KEY_DETAIL.fullmatch(exc.diag.message_detail or "")
    return found.group(1) if found else "?"


def is_retryable(exc: psycopg.Error) -> bool:
    """Whether the failed statement was rolled back for a reason worth one more try
    (deadlock, serialization failure)."""
    return isinstance(exc, pg_errors.TransactionRollback)


class WrongConnectionError(ConfigurationError, TypeError):
    """``enqueue(..., conn=...)`` was given something other than a psycopg connection of the
    right flavour (async for ``aenqueue``, blocking for ``enqueue``)."""


def wrong_connection(conn: object, expected: str) -> str:
    """The message of :class:`WrongConnectionError`."""
    kind = f"{type(conn).__module__}.{type(conn).__qualname__}"
    hint = ""
    if isinstance(conn, psycopg.Connection):
        hint = (
            "; this is a blocking psycopg.Connection: use engine.enqueue(..., conn=conn) "
            "from synchronous code"
        )
    elif isinstance(conn, psycopg.AsyncConnection):
        hint = (
            "; this is a psycopg.AsyncConnection: use 'await engine.aenqueue(..., conn=conn)' "
            "from async code"
        )
    return (
        f"the PostgreSQL store can enqueue in a caller's transaction only through a "
        f"{expected}, got {kind}{hint}"
    )
