"""The in-memory store passes the store conformance suite."""

from __future__ import annotations

import pytest

from dispatch_core.stores import MemoryStore
from dispatch_core.testing import StoreConformance


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def store_factory(self):  # type: ignore[no-untyped-def]
        shared = MemoryStore()  # one "database" shared by every instance in a test
        return lambda: shared
