"""Fixtures for the SQLite store tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dispatch_plugins.sqlite import SQLiteStore


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A URL for a fresh database file (tmp_path is absolute, hence four slashes)."""
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[SQLiteStore]:
    """An open, migrated store on a fresh file."""
    s = SQLiteStore(db_url)
    await s.open()
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()
