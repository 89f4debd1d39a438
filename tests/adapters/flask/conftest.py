"""Fixtures for the Flask adapter's tests: apps made by a factory, on real stores."""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from flask import Flask

from dispatch_core import Engine
from dispatch_flask import Dispatch

T = TypeVar("T")

REPO = pathlib.Path(__file__).resolve().parents[3]

MakeApp = Callable[..., Flask]


@pytest.fixture
def sqlite_url(tmp_path: pathlib.Path) -> str:
    """A store URL on a fresh SQLite file."""
    pytest.importorskip("dispatch_plugins.sqlite")
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def dispatch() -> Dispatch:
    """A fresh extension, not yet on any app (as at the top of a module)."""
    return Dispatch()


@pytest.fixture
def make_app(dispatch: Dispatch) -> Iterator[MakeApp]:
    """``make_app(name="app", **config)``: an app factory that initializes ``dispatch`` on a
    new app (memory store unless ``DISPATCH_URL`` is given); engines are closed afterwards."""
    apps: list[Flask] = []

    def make(name: str = "app", **config: Any) -> Flask:
        app = Flask(name)
        app.config.update({"DISPATCH_URL": "memory://", **config})
        dispatch.init_app(app)
        apps.append(app)
        return app

    yield make
    for app in apps:
        dispatch.get_engine(app).close()


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


OnEngine = Callable[[Engine, Callable[[Engine], Awaitable[T]]], T]


@pytest.fixture(name="on_engine")
def _on_engine() -> OnEngine[Any]:
    """``on_engine(engine, lambda e: e.drain())``: run an async call in a fresh event loop,
    then close the engine's async store (as the CLI does), so no connection outlives it."""

    def on_engine(engine: Engine, call: Callable[[Engine], Awaitable[T]]) -> T:
        async def main() -> T:
            try:
                return await call(engine)
            finally:
                await engine.aclose()

        return asyncio.run(main())

    return on_engine
