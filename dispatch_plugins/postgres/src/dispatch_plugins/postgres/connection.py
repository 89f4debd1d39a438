"""Connections and pools, the runners of :mod:`~dispatch_plugins.postgres.operations`, and the
translation of driver errors into Dispatch's.

The store's connections are autocommit (one statement, one transaction, one round trip) and
use the UTC session time zone, so times come back in UTC without conversion. Pools are made
here but owned by the stores, which open them lazily and once per process.
"""

from __future__ import annotations

import re
from contextlib import AsyncExitStack, ExitStack
from typing import Any, TypeVar, cast

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from dispatch_core.errors import ConfigurationError, JobIdTakenError, StoreUnavailableError
from dispatch_plugins.postgres.operations import TRANSACTION, Copy, Steps, Stmt
from dispatch_plugins.postgres.url import PostgresURL

__all__ = [
    "run_async",
    "run_sync",
    "connect_async",
    "connect_sync",
    "make_async_pool",
    "make_sync_pool",
    "unavailable",
    "store_error",
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

# -- running operations ----------------------------------------------------------------------


async def run_async(conn: psycopg.AsyncConnection[Any], steps: Steps[T], *, own: bool) -> T:
    """Run an operation's steps on ``conn``.

    Args:
        conn: An open async connection.
        steps: The operation's generator, not started.
        own: ``conn`` is one of the store's (autocommit) connections, so a
            :data:`~dispatch_plugins.postgres.operations.TRANSACTION` marker opens a transaction;
            on a caller's connection the marker is ignored and nothing is committed.
    """
    async with AsyncExitStack() as stack:
        sent: Any = None
        while True:
            try:
                step = steps.send(sent)
            except StopIteration as stop:
                return cast(T, stop.value)
            if isinstance(step, Stmt):
                cur = await conn.execute(step.sql, step.params, binary=True)
                sent = await cur.fetchall() if step.rows else cur.rowcount
            elif isinstance(step, Copy):
                async with conn.cursor() as cur, cur.copy(step.sql) as copy:
                    copy.set_types(list(step.types))
                    for row in step.rows:
                        await copy.write_row(row)
                sent = None
            else:
                assert step is TRANSACTION
                if own:
                    await stack.enter_async_context(conn.transaction())
                sent = None


def run_sync(conn: psycopg.Connection[Any], steps: Steps[T], *, own: bool) -> T:
    """The blocking twin of :func:`run_async`."""
    with ExitStack() as stack:
        sent: Any = None
        while True:
            try:
                step = steps.send(sent)
            except StopIteration as stop:
                return cast(T, stop.value)
            if isinstance(step, Stmt):
                cur = conn.execute(step.sql, step.params, binary=True)
                sent = cur.fetchall() if step.rows else cur.rowcount
            elif isinstance(step, Copy):
                with conn.cursor() as cur, cur.copy(step.sql) as copy:
                    copy.set_types(list(step.types))
                    for row in step.rows:
                        copy.write_row(row)
                sent = None
            else:
                assert step is TRANSACTION
                if own:
                    stack.enter_context(conn.transaction())
                sent = None


# -- connections and pools -------------------------------------------------------------------


def _connect_kwargs(config: PostgresURL) -> dict[str, Any]:
    return {"autocommit": True, "prepare_threshold": config.prepare_threshold}


async def _configure_async(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(_SESSION)


def _configure_sync(conn: psycopg.Connection[Any]) -> None:
    conn.execute(_SESSION)


async def connect_async(config: PostgresURL) -> psycopg.AsyncConnection[Any]:
    """Open one configured autocommit connection (the listener's, or the check in ``open``).

    Raises:
        StoreUnavailableError: the server cannot be reached or refuses us; the message names
            ``user@host:port/dbname`` and libpq's reason.
    """
    try:
        conn = await psycopg.AsyncConnection.connect(config.conninfo, **_connect_kwargs(config))
    except psycopg.Error as exc:
        raise unavailable(config, exc) from exc
    try:
        await _configure_async(conn)
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
        _configure_sync(conn)
    except psycopg.Error as exc:
        conn.close()
        raise unavailable(config, exc) from exc
    return conn


def make_async_pool(config: PostgresURL) -> AsyncPool:
    """An unopened async pool for ``config`` (``await pool.open()`` it in the loop that uses
    it)."""
    return AsyncConnectionPool(
        config.conninfo,
        kwargs=_connect_kwargs(config),
        min_size=config.min_size,
        max_size=config.max_size,
        timeout=config.pool_timeout,
        configure=_configure_async,
        name=f"dispatch-{config.schema}",
        open=False,
    )


def make_sync_pool(config: PostgresURL) -> SyncPool:
    """An unopened blocking pool for ``config``."""
    return ConnectionPool(
        config.conninfo,
        kwargs=_connect_kwargs(config),
        min_size=config.min_size,
        max_size=config.max_size,
        timeout=config.pool_timeout,
        configure=_configure_sync,
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
        f"cannot use PostgreSQL at {config.display}: {_reason(config, exc)}"
    )


_MISSING_SCHEMA = (pg_errors.UndefinedTable, pg_errors.InvalidSchemaName)
# The detail of a primary key violation on jobs: ids hold no spaces, so the match is exact.
_KEY_DETAIL = re.compile(r"Key \(id\)=\((\S+)\) already exists\.")


def store_error(config: PostgresURL, exc: psycopg.Error) -> Exception:
    """The error to raise for a driver error met by an operation.

    Connection-level errors (refused, lost, pool exhausted, server shutting down, deadlock
    retries used up) and a missing schema become :class:`StoreUnavailableError`; a job id
    already taken (``jobs_pkey``: a chosen id another tenant's job has) becomes
    :class:`JobIdTakenError`; anything else (a constraint, a bad value) is returned unchanged.
    """
    taken = _taken_job_id(exc)
    if taken is not None:
        return JobIdTakenError(taken)
    if isinstance(exc, _MISSING_SCHEMA):
        return StoreUnavailableError(
            f"PostgreSQL at {config.display}: {_reason(config, exc)} (the schema "
            f"{config.schema!r} is missing or incomplete: run 'await store.migrate()' once)"
        )
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return unavailable(config, exc)
    return exc


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
