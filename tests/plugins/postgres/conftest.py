"""Fixtures for the PostgreSQL store tests: a real server, and a fresh schema per test.

The server is ``DISPATCH_TEST_POSTGRES_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``). When it cannot be reached, the tests that
need it skip locally and fail in CI (``DISPATCH_TEST_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator

import psycopg
import pytest

from dispatch_plugins.postgres import PostgresStore

from ._cluster import PrivateCluster, find_bindir

DSN = os.environ.get("DISPATCH_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


@functools.cache
def server_problem() -> str | None:
    """Why the test server cannot be used, or ``None`` when it can (asked once per session)."""
    try:
        psycopg.connect(DSN, connect_timeout=3).close()
    except psycopg.Error as exc:
        return " ".join(str(exc).split())
    return None


def with_params(dsn: str, **params: str) -> str:
    """``dsn`` with query parameters added."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{dsn}{'&' if '?' in dsn else '?'}{query}"


def drop_schema(schema: str) -> None:
    """Drop a test schema and everything in it."""
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def pg_dsn(require_service: Callable[[str], None]) -> str:
    """The test server's DSN; skips (locally) or fails (CI) when it is unreachable."""
    problem = server_problem()
    if problem is not None:
        require_service(f"PostgreSQL at {DSN} ({problem})")
    return DSN


@pytest.fixture
def schema(pg_dsn: str) -> Iterator[str]:
    """A fresh schema name, dropped after the test (created by the first migrate)."""
    name = f"dispatch_test_{secrets.token_hex(5)}"
    try:
        yield name
    finally:
        drop_schema(name)


@pytest.fixture
def pg_url(pg_dsn: str, schema: str) -> str:
    """A store URL on the fresh schema."""
    return with_params(pg_dsn, schema=schema)


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    """An open, migrated store on a fresh schema."""
    s = PostgresStore(pg_url)
    await s.open()
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def cluster(require_service: Callable[[str], None]) -> Iterator[PrivateCluster]:
    """A private cluster of our own, which the test may stop and restart at will."""
    bindir = find_bindir()
    if bindir is None:
        require_service("PostgreSQL server binaries (initdb, pg_ctl)")
    assert bindir is not None
    made = PrivateCluster(bindir)
    try:
        made.init()
        made.start()
        yield made
    finally:
        made.destroy()
