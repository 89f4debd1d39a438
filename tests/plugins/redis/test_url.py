"""Store URLs: the three schemes, the options, and errors that never show the password."""

from __future__ import annotations

import importlib.metadata

import pytest

from dispatch_core import Engine
from dispatch_core.errors import StoreURLError
from dispatch_core.registry import StoreRegistry
from dispatch_plugins.redis import RedisStore, parse_url
from dispatch_plugins.redis.plugin import dispatch_register_stores


def test_entry_point_is_installed() -> None:
    eps = importlib.metadata.entry_points(group="dispatch_core.plugins")
    assert {ep.name: ep.value for ep in eps}.get("redis") == "dispatch_plugins.redis.plugin"


def test_every_scheme_is_registered() -> None:
    registry = StoreRegistry()
    dispatch_register_stores(registry)
    assert {"redis", "rediss", "unix"} <= set(registry.schemes())
    for url in ("redis://h/1?prefix=a", "rediss://h/1?prefix=a", "unix:///tmp/r.sock?prefix=a"):
        store = registry.create(url)
        assert isinstance(store, RedisStore)
        assert store.prefix == "a"


def test_engine_finds_the_plugin() -> None:
    engine = Engine("redis://:s3cret@cache.internal:6380/2?prefix=app")
    assert isinstance(engine.store, RedisStore)
    assert "s3cret" not in engine.safe_url
    assert "s3cret" not in repr(engine.store)


def test_tcp_defaults() -> None:
    u = parse_url("redis://localhost")
    assert u.prefix == "dispatch"
    assert u.channel == "dispatch:wake"
    assert (u.kwargs["host"], u.kwargs["port"], u.kwargs["db"]) == ("localhost", 6379, 0)
    assert u.kwargs["socket_connect_timeout"] == 5.0
    assert u.display == "localhost:6379/0"
    assert "ssl" not in u.kwargs


def test_tcp_with_everything() -> None:
    u = parse_url(
        "redis://app:p%40ss@10.0.0.5:7000/3?prefix=my.app:jobs&socket_timeout=2.5"
        "&max_connections=20&client_name=billing&health_check_interval=30"
    )
    assert (u.kwargs["username"], u.kwargs["password"]) == ("app", "p@ss")
    assert (u.kwargs["host"], u.kwargs["port"], u.kwargs["db"]) == ("10.0.0.5", 7000, 3)
    assert u.prefix == "my.app:jobs"
    assert u.kwargs["socket_timeout"] == 2.5
    assert u.kwargs["max_connections"] == 20
    assert u.kwargs["client_name"] == "billing"
    assert u.kwargs["health_check_interval"] == 30
    assert u.display == "app@10.0.0.5:7000/3"
    assert "p@ss" not in repr(u)


def test_tls() -> None:
    u = parse_url("rediss://:pw@cache:6380/0?ssl_cert_reqs=none&ssl_check_hostname=off")
    assert u.kwargs["ssl"] is True
    assert u.kwargs["ssl_cert_reqs"] == "none"
    assert u.kwargs["ssl_check_hostname"] is False
    assert parse_url("rediss://cache").kwargs["ssl_cert_reqs"] == "required"


def test_unix_socket() -> None:
    u = parse_url("unix://:pw@/run/redis/redis.sock?db=4&prefix=x")
    assert u.kwargs["unix_socket_path"] == "/run/redis/redis.sock"
    assert u.kwargs["db"] == 4
    assert u.kwargs["password"] == "pw"
    assert "host" not in u.kwargs
    assert u.display == "unix:/run/redis/redis.sock (db 4)"


def test_ipv6_host() -> None:
    u = parse_url("redis://[::1]:6390/1")
    assert u.kwargs["host"] == "::1"
    assert u.display == "[::1]:6390/1"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("http://h", "not a Redis store URL"),
        ("redis:h", "not a Redis store URL"),
        ("redis://h/x", "database number"),
        ("redis://h/1/2", "database number"),
        ("redis://h?db=2", "as its path"),
        ("redis://h?prefix=", "prefix"),
        ("redis://h?prefix=has space", "prefix"),
        ("redis://h?prefix=" + "x" * 65, "prefix"),
        ("redis://h?nope=1", "unknown query parameter 'nope'"),
        ("redis://h?prefix=a&prefix=b", "given twice"),
        ("redis://h?socket_timeout=0", "seconds > 0"),
        ("redis://h?socket_timeout=nan", "seconds > 0"),
        ("redis://h?max_connections=0", ">= 1"),
        ("redis://h?max_connections=x", "integer"),
        ("redis://h?ssl_cert_reqs=none", "rediss://"),
        ("rediss://h?ssl_cert_reqs=maybe", "none, optional or required"),
        ("rediss://h?ssl_check_hostname=perhaps", "on or off"),
        ("redis://h:99999", "invalid Redis store URL"),
        ("unix://", "no socket path"),
        ("unix://host/tmp/r.sock", "three slashes"),
        ("unix:///tmp/r.sock?db=-1", ">= 0"),
    ],
)
def test_bad_urls_are_refused(url: str, match: str) -> None:
    with pytest.raises(StoreURLError, match=match):
        parse_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@h/x",
        "redis://u:hunter2@h?nope=1",
        "redis://u:hunter2@h:99999",
        "unix://:hunter2@/tmp/s?db=x",
        "redis://:hunter2@h?password=hunter2",
    ],
)
def test_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(StoreURLError) as info:
        parse_url(url)
    assert "hunter2" not in str(info.value)


async def test_an_unreachable_server_fails_fast_without_the_password() -> None:
    from dispatch_core.errors import StoreUnavailableError

    store = RedisStore("redis://:hunter2@127.0.0.1:1/0?socket_connect_timeout=1")
    with pytest.raises(StoreUnavailableError) as info:
        await store.open()
    assert "127.0.0.1:1/0" in str(info.value)
    assert "hunter2" not in str(info.value)
    await store.close()
    with pytest.raises(StoreUnavailableError, match="not open"):
        await store.get_job("job_x")
