"""Parsing sqlite:// URLs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dispatch_core.errors import StoreURLError
from dispatch_plugins.sqlite import SQLiteStore
from dispatch_plugins.sqlite.url import (
    DEFAULT_BUSY_TIMEOUT_MS,
    DEFAULT_IDLE_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    parse_url,
)


def test_relative_path_is_resolved_against_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    parsed = parse_url("sqlite:///data/jobs.db")
    assert parsed.path == os.path.join(str(tmp_path), "data", "jobs.db")
    assert parsed.busy_timeout_ms == DEFAULT_BUSY_TIMEOUT_MS
    assert parsed.poll_interval == DEFAULT_POLL_INTERVAL
    assert parsed.idle_poll_interval == DEFAULT_IDLE_POLL_INTERVAL


def test_absolute_path_takes_four_slashes() -> None:
    assert parse_url("sqlite:////var/lib/app/jobs.db").path == "/var/lib/app/jobs.db"


def test_percent_escapes_are_decoded() -> None:
    assert parse_url("sqlite:////tmp/my%20jobs.db").path == "/tmp/my jobs.db"


def test_query_parameters() -> None:
    parsed = parse_url(
        "sqlite:////tmp/j.db?busy_timeout=250&poll_interval=0.005&idle_poll_interval=0.1"
    )
    assert parsed.busy_timeout_ms == 250
    assert parsed.poll_interval == 0.005
    assert parsed.idle_poll_interval == 0.1


def test_idle_interval_is_never_shorter_than_the_poll_interval() -> None:
    assert parse_url("sqlite:////tmp/j.db?poll_interval=0.5").idle_poll_interval == 0.5
    with pytest.raises(StoreURLError, match="idle_poll_interval"):
        parse_url("sqlite:////tmp/j.db?poll_interval=0.5&idle_poll_interval=0.1")


def test_the_store_exposes_its_path() -> None:
    store = SQLiteStore("sqlite:////tmp/x/jobs.db")
    assert store.path == "/tmp/x/jobs.db"
    assert store.url == "sqlite:////tmp/x/jobs.db"
    assert "jobs.db" in repr(store)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("sqlite:///:memory:", "memory://"),
        ("sqlite:///file::memory:?cache=shared", "memory://"),
        ("sqlite://", "no database path"),
        ("sqlite:///", "no database path"),
        ("sqlite://host/jobs.db", "names a host"),
        ("sqlite:///data/", "directory"),
        ("postgresql:///jobs", "not a SQLite store URL"),
        ("sqlite:jobs.db", "not a SQLite store URL"),
    ],
)
def test_unusable_urls_are_refused(url: str, match: str) -> None:
    with pytest.raises(StoreURLError, match=match):
        parse_url(url)
    with pytest.raises(StoreURLError):
        SQLiteStore(url)  # the factory the registry calls refuses it too


def test_unknown_query_parameter_is_named() -> None:
    with pytest.raises(StoreURLError, match="'journal'"):
        parse_url("sqlite:////tmp/j.db?journal=delete")


@pytest.mark.parametrize(
    "query",
    [
        "busy_timeout=soon",
        "busy_timeout=-1",
        "busy_timeout=1.5",
        "poll_interval=0",
        "poll_interval=nan",
        "poll_interval=",
        "busy_timeout=1&busy_timeout=2",
    ],
)
def test_malformed_query_values_are_refused(query: str) -> None:
    with pytest.raises(StoreURLError, match=query.split("=")[0]):
        parse_url(f"sqlite:////tmp/j.db?{query}")
