"""Parsing postgresql:// store URLs: our parameters, libpq's, and clear errors."""

from __future__ import annotations

import pytest

from dispatch_core.errors import StoreURLError
from dispatch_plugins.postgres.connection import session_sql
from dispatch_plugins.postgres.url import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_LIBPQ,
    DEFAULT_MAX_SIZE,
    DEFAULT_MIN_SIZE,
    DEFAULT_POOL_TIMEOUT,
    parse_url,
)


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    cfg = parse_url("postgresql://app@db.internal:5433/jobs")
    assert cfg.schema == "dispatch"
    assert cfg.channel == "dispatch_dispatch"
    assert (cfg.min_size, cfg.max_size) == (DEFAULT_MIN_SIZE, DEFAULT_MAX_SIZE)
    assert cfg.pool_timeout == DEFAULT_POOL_TIMEOUT
    assert cfg.prepare_threshold == 5
    assert cfg.worker_synchronous_commit is False
    assert cfg.display == "app@db.internal:5433/jobs"
    # libpq gets the URL with a finite connect timeout and a recognisable application name
    assert cfg.conninfo.startswith("postgresql://app@db.internal:5433/jobs?")
    assert f"connect_timeout={DEFAULT_CONNECT_TIMEOUT}" in cfg.conninfo
    assert "fallback_application_name=dispatch" in cfg.conninfo


def test_our_parameters_are_read_and_removed() -> None:
    cfg = parse_url(
        "postgres://u@h/db?schema=jobs_v2&min_size=2&max_size=20&pool_timeout=2.5"
        "&prepare_threshold=none&worker_synchronous_commit=on"
    )
    assert cfg.schema == "jobs_v2"
    assert cfg.channel == "dispatch_jobs_v2"
    assert (cfg.min_size, cfg.max_size) == (2, 20)
    assert cfg.pool_timeout == 2.5
    assert cfg.prepare_threshold is None
    assert cfg.worker_synchronous_commit is True
    for ours in ("schema", "min_size", "max_size", "pool_timeout", "prepare_threshold", "worker_"):
        assert ours not in cfg.conninfo
    assert cfg.conninfo.startswith("postgres://u@h/db")


def test_timeouts_and_keepalives_by_default() -> None:
    cfg = parse_url("postgresql://app@db.internal:5433/jobs")
    assert cfg.statement_timeout == 10
    assert cfg.lock_timeout == 0
    assert cfg.idle_in_transaction_session_timeout == 30
    assert cfg.call_timeout == 12  # statement_timeout + 2: the server's cancellation first
    for key, value in DEFAULT_LIBPQ.items():
        assert f"{key}={value}" in cfg.conninfo
    assert "tcp_user_timeout=30000" in cfg.conninfo
    assert session_sql(cfg).endswith(
        "SET statement_timeout = 10000; SET lock_timeout = 0; "
        "SET idle_in_transaction_session_timeout = 30000"
    )


def test_timeouts_are_read_and_removed() -> None:
    cfg = parse_url(
        "postgresql://h/db?statement_timeout=30&lock_timeout=2.5"
        "&idle_in_transaction_session_timeout=0&call_timeout=45"
    )
    assert (cfg.statement_timeout, cfg.lock_timeout) == (30, 2.5)
    assert cfg.idle_in_transaction_session_timeout == 0  # no limit
    assert cfg.call_timeout == 45
    for ours in ("statement_timeout", "lock_timeout", "idle_in_", "call_timeout"):
        assert ours not in cfg.conninfo
    assert session_sql(cfg).endswith(
        "SET statement_timeout = 30000; SET lock_timeout = 2500; "
        "SET idle_in_transaction_session_timeout = 0"
    )
    # a tiny limit stays a limit (0 ms would mean none)
    assert "SET statement_timeout = 1;" in session_sql(
        parse_url("postgresql://h/db?statement_timeout=0.0001")
    )


@pytest.mark.parametrize(
    ("query", "call_timeout"),
    [
        ("statement_timeout=30", 32.0),
        ("statement_timeout=0", 0.0),
        ("statement_timeout=0&call_timeout=20", 20.0),
    ],
)
def test_call_timeout_follows_statement_timeout_unless_given(
    query: str, call_timeout: float
) -> None:
    assert parse_url(f"postgresql://h/db?{query}").call_timeout == call_timeout


def test_libpq_keepalive_settings_in_the_url_win() -> None:
    cfg = parse_url("postgresql://h/db?keepalives_idle=60&tcp_user_timeout=0&keepalives=0")
    assert cfg.conninfo.count("keepalives_idle") == 1
    assert "keepalives_idle=60" in cfg.conninfo
    assert cfg.conninfo.count("tcp_user_timeout") == 1
    assert "tcp_user_timeout=0" in cfg.conninfo
    assert "keepalives=0" in cfg.conninfo
    assert "keepalives_interval=5" in cfg.conninfo  # the ones not given keep our defaults


def test_min_size_alone_raises_the_default_max() -> None:
    assert parse_url("postgresql://h/db?min_size=15").max_size == 15


def test_libpq_parameters_pass_through_unchanged() -> None:
    cfg = parse_url(
        "postgresql://u@h/db?sslmode=require&application_name=my%20app&connect_timeout=3"
        "&options=-c%20statement_timeout%3D5000"
    )
    assert "sslmode=require" in cfg.conninfo
    assert "application_name=my%20app" in cfg.conninfo
    assert "connect_timeout=3" in cfg.conninfo
    assert "fallback_application_name" not in cfg.conninfo  # the user named it
    assert "options=-c%20statement_timeout%3D5000" in cfg.conninfo
    assert cfg.conninfo.count("connect_timeout") == 1


def test_connect_timeout_from_the_environment_is_respected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "30")
    assert "connect_timeout" not in parse_url("postgresql://h/db").conninfo


def test_the_password_is_never_shown() -> None:
    cfg = parse_url("postgresql://app:s3cr%40t@db:5432/jobs?schema=x")
    assert cfg.password == "s3cr@t"
    assert "s3cr" not in cfg.display
    assert "s3cr" not in repr(cfg)
    assert cfg.scrub("failed for s3cr@t and s3cr%40t") == "failed for *** and ***"
    with pytest.raises(StoreURLError) as info:
        parse_url("postgresql://app:s3cr%40t@db:5432/jobs?bogus=1")
    assert "s3cr" not in str(info.value)
    assert "app:***@db" in str(info.value)
    # libpq quotes the part it cannot parse: here the password
    with pytest.raises(StoreURLError, match="percent-encoded") as info:
        parse_url("postgresql://app:s3%zz@db:5432/jobs")
    assert "s3" not in str(info.value).replace("postgresql", "")


def test_a_query_password_is_never_shown_in_url_errors() -> None:
    for url in (
        "postgresql://app@db:5432/jobs?password=hunter2&bogus=1",
        "postgresql://app@db:5432/jobs?sslpassword=hunter2&statement_timeout=-1",
    ):
        with pytest.raises(StoreURLError) as info:
            parse_url(url)
        assert "hunter2" not in str(info.value), str(info.value)
        assert "=***" in str(info.value)


def test_unix_socket_host_is_displayed_as_such() -> None:
    cfg = parse_url("postgresql://u@%2Fvar%2Frun%2Fpostgresql/db")
    assert cfg.display == "u@/var/run/postgresql (socket, port 5432)/db"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("mysql://h/db", "not a PostgreSQL store URL"),
        ("postgresql:/h/db", "not a PostgreSQL store URL"),
        ("postgresql://h/db?bogus=1", r"unknown query parameter 'bogus'.*schema, min_size"),
        ("postgresql://h/db?schema=My-Jobs", "not a plain lowercase identifier"),
        ("postgresql://h/db?schema=", "not a plain lowercase identifier"),
        (f"postgresql://h/db?schema={'x' * 51}", "at most 50 characters"),
        ("postgresql://h/db?schema=a&schema=b", "given twice"),
        ("postgresql://h/db?min_size=-1", "must be >= 0"),
        ("postgresql://h/db?max_size=0", "must be >= 1"),
        ("postgresql://h/db?max_size=many", "must be an integer"),
        ("postgresql://h/db?min_size=5&max_size=2", "smaller than min_size"),
        ("postgresql://h/db?pool_timeout=0", r"pool_timeout='0'.*seconds > 0"),
        ("postgresql://h/db?pool_timeout=nan", "pool_timeout"),
        ("postgresql://h/db?statement_timeout=-1", r"statement_timeout='-1'.*>= 0 \(0: no limit"),
        ("postgresql://h/db?statement_timeout=10s", r"statement_timeout='10s'.*number of seconds"),
        ("postgresql://h/db?lock_timeout=inf", r"lock_timeout='inf'.*number of seconds"),
        ("postgresql://h/db?call_timeout=nan", r"call_timeout='nan'.*number of seconds"),
        ("postgresql://h/db?idle_in_transaction_session_timeout=", "idle_in_transaction_session"),
        ("postgresql://h/db?statement_timeout=3000000", r"too long.*at most 2147483 seconds"),
        ("postgresql://h/db?call_timeout=1&call_timeout=2", "given twice"),
        ("postgresql://h/db?prepare_threshold=soon", "must be an integer"),
        ("postgresql://[::1/db", "invalid PostgreSQL store URL"),
        ("postgresql://h/db?worker_synchronous_commit=maybe", "must be on or off"),
        ("postgresql://h/db%zz", "invalid PostgreSQL store URL.*percent-encoded"),
    ],
)
def test_bad_urls_are_refused_clearly(url: str, match: str) -> None:
    with pytest.raises(StoreURLError, match=match):
        parse_url(url)
