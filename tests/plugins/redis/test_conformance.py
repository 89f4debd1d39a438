"""The Redis store passes the store conformance suite, workflows and listings included."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dispatch_core.testing import StoreConformance
from dispatch_plugins.redis import RedisStore


class TestRedisStore(StoreConformance):
    @pytest.fixture
    def store_factory(self, redis_url: str) -> Callable[[], RedisStore]:
        return lambda: RedisStore(redis_url)
