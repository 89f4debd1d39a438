"""Fixtures of the chaos suite: the ``chaos`` marker, the seed, a private PostgreSQL cluster
and a private Redis server that may be crashed and restarted at will, and a "chaos" section
in pytest's terminal summary that shows each run's figures whether or not output is captured.

The seed comes from ``DISPATCH_TEST_CHAOS_SEED`` (``make chaos`` also accepts
``DISPATCH_CHAOS_SEED``; the root conftest removes other ``DISPATCH_*`` variables).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..plugins.postgres._cluster import find_bindir
from ._harness import ChaosCluster, ChaosRedis

DEFAULT_SEED = 20240604
SEED_ENV = "DISPATCH_TEST_CHAOS_SEED"

_summaries = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: worker processes killed and a database server restarted under load"
    )
    config.stash[_summaries] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    summaries = terminalreporter.config.stash.get(_summaries, [])
    if summaries:
        terminalreporter.section("chaos")
        for text in summaries:
            for line in text.splitlines():
                terminalreporter.write_line(line)


@pytest.fixture
def report_summary(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Show a run's summary in the terminal summary (and in the captured output)."""

    def report(text: str) -> None:
        print(text)
        request.config.stash[_summaries].append(text)

    return report


@pytest.fixture
def seed() -> int:
    """The run's seed (printed in its summary, so a failure can be replayed)."""
    raw = os.environ.get(SEED_ENV, "").strip()
    return int(raw) if raw else DEFAULT_SEED


@pytest.fixture
def cluster(require_service: Callable[[str], None]) -> Iterator[ChaosCluster]:
    """A private PostgreSQL cluster (``initdb`` in a temporary folder, another loopback port):
    restarting it disturbs nothing else. Skips locally, fails in CI, without the binaries."""
    bindir = find_bindir()
    if bindir is None:
        require_service("PostgreSQL server binaries (initdb, pg_ctl)")
    assert bindir is not None
    made = ChaosCluster(bindir)
    try:
        made.init()
        made.start()
        yield made
    finally:
        made.destroy()


@pytest.fixture
def redis_server(tmp_path: Path, require_service: Callable[[str], None]) -> Iterator[ChaosRedis]:
    """A private ``redis-server`` (loopback, another port, ``appendonly yes`` with
    ``appendfsync always``, its files in the test's ``tmp_path``): killing it disturbs nothing
    else, and it loses nothing it acknowledged. Skips locally, fails in CI, without the
    binary."""
    if shutil.which("redis-server") is None:
        require_service("the redis-server binary")
    folder = tmp_path / "redis"
    folder.mkdir()
    made = ChaosRedis(folder)
    try:
        made.start()
        # The verdict allows no lost acknowledged write: hold the server to that.
        assert made.settings() == {
            "appendonly": "yes",
            "appendfsync": "always",
            "maxmemory-policy": "noeviction",
        }
        yield made
    finally:
        made.stop()


@pytest.fixture
def here() -> Path:
    """This folder: the workers' working directory, where ``chaos_app`` is importable."""
    return Path(__file__).resolve().parent
