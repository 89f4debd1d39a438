"""listen(): LISTEN/NOTIFY wake-ups from other connections and processes."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
import threading
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from dispatch_core.models import Outcome, OutcomeKind, utcnow
from dispatch_core.testing import make_new_job
from dispatch_plugins.postgres import PostgresStore

from .conftest import DSN, with_params

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

    def arm(self) -> None:
        self.event.clear()

    async def wait(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self.event.wait(), timeout)

    async def quiet(self, seconds: float = 0.2) -> bool:
        """Whether no wake-up arrives for ``seconds``."""
        self.event.clear()
        try:
            await asyncio.wait_for(self.event.wait(), seconds)
        except TimeoutError:
            return True
        return False


async def test_wakes_when_another_connection_enqueues(store: PostgresStore) -> None:
    wakes = Wakes()
    stop = await store.listen(wakes)
    producer = PostgresStore(store.url).sync()  # its own pool, as another process has
    try:
        wakes.arm()
        await asyncio.to_thread(producer.enqueue, [make_new_job()])
        await wakes.wait()
        assert wakes.threads == {threading.get_ident()}  # called on the loop's thread
        wakes.arm()
        await asyncio.to_thread(producer.enqueue, [make_new_job() for _ in range(300)])  # COPY
        await wakes.wait()
    finally:
        await asyncio.to_thread(producer.close)
        await stop()
    # stopped: later commits wake nobody
    seen = wakes.count
    await store.enqueue([make_new_job()])
    await asyncio.sleep(0.1)
    assert wakes.count == seen
    await stop()  # stopping twice is harmless


async def test_writes_that_make_jobs_runnable_wake_and_others_do_not(
    store: PostgresStore,
) -> None:
    other = PostgresStore(store.url)  # another "process": notifications are not in-process
    await other.open()
    wakes = Wakes()
    stop = await other.listen(wakes)
    try:
        await store.enqueue([make_new_job(max_attempts=1) for _ in range(3)])
        await wakes.wait()
        now = utcnow()
        a, b, c = await store.claim(
            worker_id="w", queues=None, names=None, limit=3, lease_seconds=5, now=now
        )
        assert await wakes.quiet()  # a claim makes nothing runnable
        assert a.attempt_token
        assert b.attempt_token
        assert c.attempt_token
        await store.finish(
            [Outcome(job_id=a.id, attempt_token=a.attempt_token, kind=OutcomeKind.COMPLETED)],
            now=now,
        )
        assert await wakes.quiet()  # nor does a completion
        await store.finish(
            [Outcome(job_id=b.id, attempt_token=b.attempt_token, kind=OutcomeKind.RELEASE)],
            now=now,
        )
        await wakes.wait()  # a released job is runnable again
        wakes.arm()
        await store.finish(
            [Outcome(job_id=c.id, attempt_token=c.attempt_token, kind=OutcomeKind.FAIL)], now=now
        )
        assert await wakes.quiet()
        await store.retry(c.id, now=utcnow())
        await wakes.wait()
        (d,) = await store.claim(
            worker_id="w", queues=None, names=None, limit=1, lease_seconds=5, now=now
        )
        assert await wakes.quiet()
        assert await store.rescue_expired(now=now + timedelta(seconds=6))
        await wakes.wait()
        assert d.id in (b.id, c.id)
    finally:
        await stop()
        await other.close()


@pytest.mark.slow
async def test_wakes_when_another_process_enqueues(store: PostgresStore) -> None:
    wakes = Wakes()
    stop = await store.listen(wakes)
    try:
        wakes.arm()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "_mp_helpers.py"), "produce", store.url, "3"
        )
        assert await proc.wait() == 0
        await wakes.wait(timeout=30)
    finally:
        await stop()
    assert sum((await store.count_jobs()).values()) == 3


async def test_close_stops_the_listeners(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    await store.migrate()
    wakes = Wakes()
    stop = await store.listen(wakes)
    await store.close()
    tasks = [t for t in asyncio.all_tasks() if "dispatch-postgres listener" in t.get_name()]
    assert tasks == []
    await stop()  # stopping after close is harmless


async def test_the_listener_reconnects_and_wakes_after_losing_its_connection(
    pg_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = f"dispatch_test_{secrets.token_hex(3)}"
    store = PostgresStore(with_params(pg_dsn, schema=schema, application_name=app))
    await store.open()
    await store.migrate()
    wakes = Wakes()
    stop = await store.listen(wakes)
    (listener,) = store._listeners
    try:
        wakes.arm()
        with psycopg.connect(DSN, autocommit=True) as admin:  # kills the pool's too
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (app,),
            )
        await wakes.wait()  # woken once reconnected: something may have come meanwhile
        assert listener.reconnects == 1
        assert listener.listening
        assert any("lost" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        wakes.arm()
        producer = PostgresStore(store.url).sync()
        await asyncio.to_thread(producer.enqueue, [make_new_job()])
        await asyncio.to_thread(producer.close)
        await wakes.wait()  # listening again
    finally:
        await stop()
        await store.close()
