"""Driver errors are told apart by SQLSTATE: an outage (the caller may try again later), a
timeout (which says so and names the setting), a statement over a limit of the server (never
an outage: it fails the same way every time), and any other failure of the statement.

psycopg raises ``OperationalError`` for a server restart and for a value over a limit alike;
the store used to make a :class:`StoreUnavailableError` of every one of them, so a worker
kept an outcome the server could never take as if the server were down. Each case here is
met for real, through the store's own runner, on the test server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from dispatch_core.errors import DispatchError, StoreUnavailableError
from dispatch_plugins.postgres import (
    PostgresLimitError,
    PostgresStore,
    PostgresSyncStore,
    PostgresTimeoutError,
)
from dispatch_plugins.postgres.ops import Statements, Steps, Stmt

from .conftest import with_params


def one_statement(q: Statements, sql: str, *, rows: bool = True) -> Steps[Any]:
    """An operation of one statement, run by the store like any of its own."""
    return (yield Stmt(sql, rows=rows))


@pytest.fixture
async def tight(pg_url: str) -> AsyncIterator[PostgresStore]:
    """An open, migrated store whose statements may run for 0.2 s."""
    store = PostgresStore(with_params(pg_url, statement_timeout="0.2", max_size="2"))
    await store.open()
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()


#: (statement, SQLSTATE) pairs over a limit of the server, cheap to send.
OVER_A_LIMIT = [
    pytest.param("SELECT '{{{{{{{1}}}}}}}'::int[]", "54000", id="54000-array-dimensions"),
    pytest.param(
        "SELECT (repeat('[', 20000) || repeat(']', 20000))::jsonb",
        "54001",
        id="54001-jsonb-nesting",
    ),
]


@pytest.mark.parametrize(("sql", "state"), OVER_A_LIMIT)
async def test_a_statement_over_a_limit_of_the_server_is_not_an_outage(
    tight: PostgresStore, sql: str, state: str
) -> None:
    with pytest.raises(PostgresLimitError) as info:
        await tight._run(one_statement, sql)
    assert not isinstance(info.value, StoreUnavailableError)
    assert isinstance(info.value, DispatchError | ValueError)
    message = str(info.value)
    assert f"SQLSTATE {state}" in message
    assert "refused the statement" in message
    assert "fails the same way on every try" in message
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    # Nothing was wrong with the server or the connection: the next call just works.
    assert await tight._run(one_statement, "SELECT 1") == [(1,)]


async def test_the_statement_timeout_says_it_timed_out(tight: PostgresStore) -> None:
    with pytest.raises(PostgresTimeoutError) as info:
        await tight._run(one_statement, "SELECT pg_sleep(2)")
    err = info.value
    # Still a StoreUnavailableError (the same call may succeed later), and a TimeoutError.
    assert isinstance(err, StoreUnavailableError)
    assert isinstance(err, TimeoutError)
    assert "timed out: canceling statement due to statement timeout" in str(err)
    assert "statement_timeout is 0.2s: raise it with ?statement_timeout=<seconds>" in str(err)
    assert await tight._run(one_statement, "SELECT 1") == [(1,)]


async def test_the_lock_timeout_says_it_timed_out(pg_url: str, pg_dsn: str, schema: str) -> None:
    store = PostgresStore(with_params(pg_url, lock_timeout="0.2", max_size="2"))
    await store.open()
    await store.migrate()
    try:
        async with await psycopg.AsyncConnection.connect(pg_dsn) as other:
            await other.execute(f'LOCK TABLE "{schema}".queues IN ACCESS EXCLUSIVE MODE')
            with pytest.raises(PostgresTimeoutError, match=r"timed out: .*lock timeout.*0\.2s"):
                await store._run(one_statement, f'SELECT count(*) FROM "{schema}".queues')
    finally:
        await store.close()


async def test_a_cancel_request_is_not_a_timeout(tight: PostgresStore) -> None:
    # 57014 too, but an operator's pg_cancel_backend: the statement itself was fine.
    with pytest.raises(
        StoreUnavailableError, match="canceling statement due to user request"
    ) as info:
        await tight._run(
            one_statement, "SELECT pg_cancel_backend(pg_backend_pid()), pg_sleep(0.15)"
        )
    assert not isinstance(info.value, PostgresTimeoutError)


async def test_a_session_ended_by_the_server_is_an_outage(tight: PostgresStore) -> None:
    # 57P01: what a server shutting down (or pg_terminate_backend) sends.
    with pytest.raises(StoreUnavailableError, match="terminating connection due to administrator"):
        await tight._run(one_statement, "SELECT pg_terminate_backend(pg_backend_pid())")
    assert await tight._run(one_statement, "SELECT 1") == [(1,)]


async def test_other_failures_of_the_statement_are_not_outages(
    tight: PostgresStore, schema: str
) -> None:
    await tight._run(one_statement, f'CREATE SEQUENCE "{schema}".s', rows=False)
    # 55000 (an OperationalError to psycopg, as an outage is): the statement failed, not the
    # server. It is raised as the driver raised it, as a constraint or a bad value is.
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        await tight._run(one_statement, f"SELECT currval('\"{schema}\".s')")
    with pytest.raises(psycopg.errors.DivisionByZero):
        await tight._run(one_statement, "SELECT 1 / 0")


@pytest.fixture
def tight_sync(pg_url: str) -> Iterator[PostgresSyncStore]:
    """The blocking twin of :func:`tight` (the schema needs no tables here)."""
    store = PostgresStore(with_params(pg_url, statement_timeout="0.2")).sync()
    try:
        yield store
    finally:
        store.close()


def test_the_blocking_producer_maps_errors_alike(tight_sync: PostgresSyncStore) -> None:
    with pytest.raises(PostgresLimitError, match="SQLSTATE 54000"):
        tight_sync._call(one_statement, "SELECT '{{{{{{{1}}}}}}}'::int[]")
    with pytest.raises(PostgresTimeoutError, match=r"statement_timeout is 0\.2s"):
        tight_sync._call(one_statement, "SELECT pg_sleep(2)")
