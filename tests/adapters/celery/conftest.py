"""Fixtures for the dispatch_celery tests: an app over each store, and ways to run jobs."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dispatch_celery import Celery
from dispatch_core import Engine, Worker, WorkerStats

STORES = ["memory", "sqlite"]


def store_url(kind: str, tmp_path: pathlib.Path) -> str:
    """The URL of a fresh store of ``kind``."""
    if kind == "memory":
        return "memory://"
    pytest.importorskip("dispatch_plugins.sqlite")
    return f"sqlite:///{tmp_path}/jobs.db"


@pytest.fixture(params=STORES)
def url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    """A fresh store: every API test runs against the memory store and against SQLite."""
    return store_url(request.param, tmp_path)


@pytest.fixture
def app(url: str) -> Iterator[Celery]:
    """A Celery-style app over the test's store."""
    celery = Celery("tests", broker=url)
    yield celery
    celery.close()


DrainFn = Callable[..., WorkerStats]


@pytest.fixture
def drain() -> DrainFn:
    """Run an app's jobs until none is runnable (retries included), from sync test code."""

    def run(celery: Celery, *, wait_scheduled: bool = True, timeout: float = 20.0) -> WorkerStats:
        engine = celery.engine

        async def go() -> WorkerStats:
            try:
                return await engine.drain(wait_scheduled=wait_scheduled, timeout=timeout)
            finally:
                await engine.aclose()  # the next asyncio.run reopens it

        return asyncio.run(go())

    return run


async def _migrated(engine: Engine) -> None:
    try:
        await engine.amigrate()
    finally:
        await engine.aclose()


RunningWorker = Callable[..., contextlib.AbstractContextManager[Worker]]


@pytest.fixture
def running_worker() -> RunningWorker:
    """A worker running in a thread (its own event loop) while the test calls the sync API,
    as a producer process and a worker process would."""

    @contextlib.contextmanager
    def start(engine: Engine, **options: Any) -> Iterator[Worker]:
        options.setdefault("concurrency", 4)
        options.setdefault("poll_interval", 0.05)
        options.setdefault("grace_period", 2.0)
        # Create the store first: two connections opening a fresh SQLite file at the same
        # moment (the worker's and the test's) can meet "database is locked" while one of
        # them switches the file to WAL.
        asyncio.run(_migrated(engine))
        worker = engine.worker(**options)
        failure: list[BaseException] = []

        async def main() -> None:
            try:
                await worker.run()
            finally:
                await engine.aclose()

        def thread_main() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=thread_main, name="test-worker", daemon=True)
        thread.start()
        try:
            yield worker
        finally:
            worker.stop()
            thread.join(15)
            assert not thread.is_alive(), "the worker did not stop"
            if failure:
                raise failure[0]

    return start
