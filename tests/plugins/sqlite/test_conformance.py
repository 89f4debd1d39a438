"""The SQLite store passes the store conformance suite, workflows included."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dispatch_core.testing import StoreConformance, WorkflowConformance
from dispatch_plugins.sqlite import SQLiteStore


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> Callable[[], SQLiteStore]:
        url = f"sqlite:///{tmp_path / 'jobs.db'}"  # tmp_path is absolute: four slashes
        return lambda: SQLiteStore(url)


class TestSQLiteWorkflows(WorkflowConformance):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> Callable[[], SQLiteStore]:
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
        return lambda: SQLiteStore(url)
