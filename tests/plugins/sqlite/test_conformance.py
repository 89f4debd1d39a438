"""The SQLite store passes the store conformance suite (jobs, cluster and workflows)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dispatch_core.testing import StoreConformance
from dispatch_plugins.sqlite import SQLiteStore


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> Callable[[], SQLiteStore]:
        url = f"sqlite:///{tmp_path / 'jobs.db'}"  # tmp_path is absolute: four slashes
        return lambda: SQLiteStore(url)
