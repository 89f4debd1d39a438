"""The PostgreSQL store passes the store conformance suite, workflows included."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dispatch_core.testing import StoreConformance
from dispatch_plugins.postgres import PostgresStore


class TestPostgresStore(StoreConformance):
    @pytest.fixture
    def store_factory(self, pg_url: str) -> Callable[[], PostgresStore]:
        return lambda: PostgresStore(pg_url)
