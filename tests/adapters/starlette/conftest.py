"""Fixtures for the Starlette adapter's tests: engines on real stores, and a poller."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable, Iterator

import pytest

from dispatch_core import Engine

REPO = pathlib.Path(__file__).resolve().parents[3]


@pytest.fixture
def memory_engine() -> Iterator[Engine]:
    """An engine on the in-process store."""
    engine = Engine("memory://")
    yield engine
    engine.close()


@pytest.fixture
def sqlite_url(tmp_path: pathlib.Path) -> str:
    """A store URL on a fresh SQLite file."""
    pytest.importorskip("dispatch_plugins.sqlite")
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    """An engine on a fresh SQLite file."""
    engine = Engine(sqlite_url)
    yield engine
    engine.close()


@pytest.fixture(name="wait_until")
def _wait_until() -> Callable[..., None]:
    """``wait_until(predicate, timeout=10.0, what="...")``: poll until true, or fail."""

    def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
            time.sleep(0.02)

    return wait_until
