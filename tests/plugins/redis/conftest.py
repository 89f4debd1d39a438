"""Fixtures for the Redis store tests: a real server, and a fresh key prefix per test.

The server is ``DISPATCH_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``). When it
cannot be reached, the tests that need it skip locally and fail in CI
(``DISPATCH_TEST_REQUIRE_SERVICES=1``). Each test's keys live under a random prefix and are
deleted after it.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis

from dispatch_plugins.redis import RedisStore

REDIS_URL = os.environ.get("DISPATCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@functools.cache
def server_problem() -> str | None:
    """Why the test server cannot be used, or ``None`` when it can (asked once per session)."""
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError) as exc:
        return " ".join(str(exc).split())
    return None


def with_params(url: str, **params: str) -> str:
    """``url`` with query parameters added."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


def delete_prefix(prefix: str) -> int:
    """Delete every key under ``prefix:``; return how many there were."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        return len(keys)
    finally:
        client.close()


@pytest.fixture
def redis_base(require_service: Callable[[str], None]) -> str:
    """The test server's URL; skips (locally) or fails (CI) when it is unreachable."""
    problem = server_problem()
    if problem is not None:
        require_service(f"Redis at {REDIS_URL} ({problem})")
    return REDIS_URL


@pytest.fixture
def prefix(redis_base: str) -> Iterator[str]:
    """A fresh key prefix, its keys deleted after the test."""
    name = f"dispatch-test-{secrets.token_hex(5)}"
    try:
        yield name
    finally:
        delete_prefix(name)


@pytest.fixture
def redis_url(redis_base: str, prefix: str) -> str:
    """A store URL on the fresh prefix."""
    return with_params(redis_base, prefix=prefix)


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    """An open, migrated store on a fresh prefix."""
    s = RedisStore(redis_url)
    await s.open()
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()
