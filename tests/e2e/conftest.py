"""Fixtures of the end-to-end tests: a fresh store URL on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PG_DSN = os.environ.get(
    "DISPATCH_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _postgres_url(require_service: Callable[[str], None]) -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    pytest.importorskip("dispatch_plugins.postgres")
    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except psycopg.Error as exc:
        require_service(f"PostgreSQL at {PG_DSN} ({' '.join(str(exc).split())})")
    schema = f"dispatch_e2e_{secrets.token_hex(4)}"
    sep = "&" if "?" in PG_DSN else "?"
    try:
        yield f"{PG_DSN}{sep}schema={schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, require_service: Callable[[str], None]
) -> Iterator[str]:
    """A URL of an empty store: a SQLite file, then a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        pytest.importorskip("dispatch_plugins.sqlite")
        yield f"sqlite:///{tmp_path}/e2e.db"
    else:
        yield from _postgres_url(require_service)
