"""listen(): wake-ups from other connections and processes via PRAGMA data_version."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import pytest

from dispatch_core.testing import make_new_job
from dispatch_plugins.sqlite import SQLiteStore
from dispatch_plugins.sqlite.sync import SQLiteSyncStore
from dispatch_plugins.sqlite.url import parse_url

HERE = Path(__file__).parent


class Wakes:
    """Counts wake() calls and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.count = 0
        self.event = asyncio.Event()
        self.threads: set[int] = set()

    def __call__(self) -> None:
        self.count += 1
        self.threads.add(threading.get_ident())
        self.event.set()

    async def next(self, timeout: float = 5.0) -> None:
        self.event.clear()
        await asyncio.wait_for(self.event.wait(), timeout)


async def test_wakes_when_another_connection_enqueues(store: SQLiteStore) -> None:
    wakes = Wakes()
    stop = await store.listen(wakes)
    producer = SQLiteSyncStore(store.config)  # its own connection, as another process has
    try:
        waiting = asyncio.ensure_future(wakes.next())
        await asyncio.sleep(0.01)
        await asyncio.to_thread(producer.enqueue, [make_new_job()])
        await waiting
        assert wakes.threads == {threading.get_ident()}  # called on the loop's thread
    finally:
        await asyncio.to_thread(producer.close)
        await stop()
    # stopped: later commits wake nobody
    seen = wakes.count
    other = SQLiteSyncStore(store.config)
    await asyncio.to_thread(other.enqueue, [make_new_job()])
    await asyncio.to_thread(other.close)
    await asyncio.sleep(0.05)
    assert wakes.count == seen
    await stop()  # stopping twice is harmless


@pytest.mark.slow
async def test_wakes_when_another_process_enqueues(store: SQLiteStore) -> None:
    wakes = Wakes()
    stop = await store.listen(wakes)
    try:
        waiting = asyncio.ensure_future(wakes.next(timeout=30))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "_mp_helpers.py"), "produce", store.url, "3"
        )
        assert await proc.wait() == 0
        await waiting
    finally:
        await stop()
    assert await store.count_jobs()


async def test_own_writes_wake_in_process_listeners_at_once(store: SQLiteStore) -> None:
    wakes = Wakes()
    stop = await store.listen(wakes)
    try:
        await store.enqueue([make_new_job()])
        assert wakes.count >= 1  # called synchronously, before the watcher even polls
    finally:
        await stop()


async def test_an_idle_watcher_backs_off_but_still_wakes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}?poll_interval=0.001&idle_poll_interval=0.05"
    store = SQLiteStore(url)
    await store.open()
    await store.migrate()
    wakes = Wakes()
    stop = await store.listen(wakes)
    producer = SQLiteSyncStore(parse_url(url))
    try:
        await asyncio.sleep(1.3)  # quiet for over a second: the watcher slows down
        waiting = asyncio.ensure_future(wakes.next(timeout=2))
        await asyncio.to_thread(producer.enqueue, [make_new_job()])
        await waiting
    finally:
        producer.close()
        await stop()
        await store.close()


async def test_close_stops_the_listeners(db_url: str) -> None:
    store = SQLiteStore(db_url)
    await store.open()
    await store.migrate()
    wakes = Wakes()
    stop = await store.listen(wakes)
    await store.close()
    tasks = [t for t in asyncio.all_tasks() if "dispatch-sqlite watcher" in t.get_name()]
    assert tasks == []
    await stop()  # stopping after close is harmless
