"""Outages and hangs: calls fail fast while the server is down, the store is back within a
second of the server accepting connections, and no call waits forever on a server that does
not answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from dispatch_core.errors import StoreUnavailableError
from dispatch_core.models import utcnow
from dispatch_core.states import JobState
from dispatch_core.store import PruneCutoffs
from dispatch_core.testing import make_new_job
from dispatch_plugins.postgres import PostgresStore
from dispatch_plugins.postgres.listener import Listener
from dispatch_plugins.postgres.migrations import LATEST_VERSION, lock_key
from dispatch_plugins.postgres.url import parse_url

from ._cluster import PrivateCluster
from ._proxy import HangingProxy, hanging_proxy

#: How long the test server stays down: long enough for psycopg_pool's own reconnection
#: backoff (1, 2, 4 s...) to leave the pool waiting seconds after the server is back.
OUTAGE = 4.0
#: The issue's target: the store works again within this long of the server accepting
#: connections.
BACK_WITHIN = 1.0


async def _accepting(dsn: str) -> float:
    """Wait until the server accepts a connection (a raw one, not the store's); return when."""
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(dsn, connect_timeout=2)
        except psycopg.OperationalError:
            await asyncio.sleep(0.005)
            continue
        await conn.close()
        return time.monotonic()


async def _first_success(call: Callable[[], Awaitable[Any]]) -> float:
    """Call until the store is available again; return when the first call succeeded."""
    while True:
        try:
            await call()
        except StoreUnavailableError:
            await asyncio.sleep(0.005)
            continue
        return time.monotonic()


async def _until(check: Callable[[], bool], what: str, timeout: float) -> float:
    """Wait until ``check()``; return when. Fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout}s")
        await asyncio.sleep(0.005)
    return time.monotonic()


async def _fails_within(call: Awaitable[Any], seconds: float, match: str) -> float:
    """Assert that ``call`` raises :class:`StoreUnavailableError` matching ``match`` within
    ``seconds``; return how long it took."""
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=match):
        await asyncio.wait_for(call, 60)  # only a safety net: the store must fail far sooner
    took = time.monotonic() - started
    assert took < seconds, f"failed after {took:.2f}s, expected within {seconds}s"
    return took


@pytest.mark.slow
async def test_the_store_is_back_within_a_second_of_a_restart(cluster: PrivateCluster) -> None:
    store = PostgresStore(f"{cluster.dsn}?schema=dispatch&max_size=4")
    await store.open()
    await store.migrate()
    stop_listening = await store.listen(lambda: None)
    (listener,) = store._listeners
    producer = store.sync()
    try:
        await store.enqueue([make_new_job()])
        await asyncio.to_thread(producer.enqueue, [make_new_job()])
        # Idle pooled connections, which the shutdown kills.
        await asyncio.gather(*(store.count_jobs() for _ in range(4)))
        await asyncio.to_thread(cluster.stop, "fast")

        # While it is down, calls fail at once (the pool's timeout is 10 s), again and again.
        for _ in range(3):
            await _fails_within(store.count_jobs(), 2.0, "PostgreSQL at")
            await _fails_within(
                asyncio.to_thread(producer.enqueue, [make_new_job()]), 2.0, "PostgreSQL at"
            )
        await asyncio.sleep(OUTAGE)  # the outage goes on: the pool retries, backing off

        starting = asyncio.create_task(asyncio.to_thread(cluster.start))
        up = await asyncio.wait_for(_accepting(cluster.dsn), 60)

        async def claim() -> None:
            await store.claim(
                worker_id="w", queues=None, names=None, limit=1, lease_seconds=30, now=utcnow()
            )

        async def enqueue() -> None:
            await asyncio.to_thread(producer.enqueue, [make_new_job()])

        claimed, enqueued, listening = await asyncio.wait_for(
            asyncio.gather(
                _first_success(claim),
                _first_success(enqueue),
                _until(lambda: listener.listening, "the listener reconnects", 30),
            ),
            60,
        )
        await starting
        assert claimed - up < BACK_WITHIN, f"the store claimed {claimed - up:.2f}s after"
        assert enqueued - up < BACK_WITHIN, f"the producer enqueued {enqueued - up:.2f}s after"
        assert listening - up < BACK_WITHIN, f"the listener was back {listening - up:.2f}s after"
        assert listener.reconnects == 1
        assert await store.count_jobs()  # and everything works
    finally:
        await stop_listening()
        await store.close()


def _through(proxy: HangingProxy, dsn: str, **params: str) -> str:
    """``dsn`` pointed at ``proxy``, with query parameters added."""
    parts = urlsplit(dsn)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{proxy.port}" if user else f"127.0.0.1:{proxy.port}"
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return urlunsplit(parts._replace(netloc=netloc, query=query))


@pytest.fixture
def proxy(pg_dsn: str) -> Any:
    """A proxy in front of the test server, which the test can make hang."""
    parts = urlsplit(pg_dsn)
    with hanging_proxy(parts.hostname or "127.0.0.1", parts.port or 5432) as made:
        yield made


async def test_a_call_to_a_server_that_hangs_fails_within_call_timeout(
    proxy: HangingProxy, pg_dsn: str, schema: str
) -> None:
    url = _through(proxy, pg_dsn, schema=schema, call_timeout="1", connect_timeout="2")
    store = PostgresStore(url)
    await store.open()
    await store.migrate()
    producer = store.sync()
    try:
        (job,) = await store.enqueue([make_new_job()])
        await asyncio.to_thread(producer.get_job, job.id)  # the producer's pool is open
        proxy.hang()

        # In flight: the deadline drops the connection. A read is not run again after a
        # deadline (that would wait as long once more): within 1 s, not 2.
        await _fails_within(store.get_job(job.id), 1.9, r"no answer within 1s \(call_timeout\)")
        await _fails_within(
            asyncio.to_thread(producer.get_job, job.id), 1.9, r"no answer within 1s"
        )
        # Next: the server is probed first, and connecting hangs too (connect_timeout).
        await _fails_within(store.get_job(job.id), 3.9, "timeout expired")
        await _fails_within(asyncio.to_thread(producer.get_job, job.id), 3.9, "timeout expired")

        proxy.resume()
        resumed = time.monotonic()
        back = await asyncio.wait_for(_first_success(lambda: store.get_job(job.id)), 30)
        assert back - resumed < 3.0  # a probe hung at that moment goes through on resume
        assert (await asyncio.to_thread(producer.get_job, job.id)).id == job.id
    finally:
        proxy.resume()
        await store.close()


async def test_the_listener_notices_a_server_that_hangs_and_comes_back(
    proxy: HangingProxy, pg_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dispatch_plugins.postgres.listener")
    config = parse_url(_through(proxy, pg_dsn, schema=schema, call_timeout="1"))
    wakes: list[float] = []
    listener = Listener(config, lambda: wakes.append(time.monotonic()), probe_interval=0.2)
    await listener.start()
    try:
        assert listener.listening
        proxy.hang()
        hung = time.monotonic()
        # Quiet for 0.2 s, then a probe that gets no answer within call_timeout.
        lost = await _until(lambda: not listener.listening, "the listener notices", 30)
        assert lost - hung < 0.2 + 1.0 + 1.5
        assert any("no answer to a probe" in r.getMessage() for r in caplog.records)
        proxy.resume()
        await _until(lambda: listener.reconnects == 1, "the listener reconnects", 30)
        assert listener.listening
        assert wakes  # woken once back: notifications may have been missed meanwhile
    finally:
        proxy.resume()
        await listener.stop()


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"statement_timeout": "0.3"}, r"statement timeout .*statement_timeout is 0.3s"),
        ({"lock_timeout": "0.3"}, r"lock timeout .*lock_timeout is 0.3s"),
    ],
)
async def test_the_server_cancels_a_statement_that_waits_too_long(
    pg_dsn: str, schema: str, params: dict[str, str], match: str
) -> None:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    store = PostgresStore(f"{pg_dsn}?schema={schema}&max_size=1&{query}")
    await store.open()
    await store.migrate()
    try:
        (job,) = await store.enqueue([make_new_job()])
        async with await psycopg.AsyncConnection.connect(pg_dsn) as other:
            # Another transaction holds the job's row: cancelling it has to wait.
            await other.execute(
                f'SELECT 1 FROM "{schema}".jobs WHERE id = %s FOR UPDATE', (job.id,)
            )
            await _fails_within(store.cancel(job.id, now=utcnow()), 2.0, match)
        # The server cancelled the statement and the session lives on: the same call works.
        assert (await store.cancel(job.id, now=utcnow())).state is JobState.CANCELLED
    finally:
        await store.close()


async def test_retention_gets_six_times_the_statement_timeout(pg_dsn: str, schema: str) -> None:
    store = PostgresStore(f"{pg_dsn}?schema={schema}&max_size=1&statement_timeout=0.4")
    await store.open()
    await store.migrate()
    locker = await psycopg.AsyncConnection.connect(pg_dsn)
    try:

        async def lock_jobs() -> None:
            await locker.execute(f'LOCK TABLE "{schema}".jobs IN ACCESS EXCLUSIVE MODE')

        async def unlock_later() -> None:
            await asyncio.sleep(1.0)  # past statement_timeout, well within six times it
            await locker.rollback()

        await lock_jobs()
        await _fails_within(store.count_jobs(), 2.0, "statement_timeout is 0.4s")
        unlocking = asyncio.create_task(unlock_later())
        assert await store.prune(PruneCutoffs(completed=utcnow())) == 0  # waited for the lock
        await unlocking
        # Its one connection is back to the normal limit.
        await lock_jobs()
        await _fails_within(store.count_jobs(), 1.6, "statement_timeout is 0.4s")
    finally:
        await locker.close()
        await store.close()


async def test_migrations_wait_for_another_migration_past_the_timeouts(
    pg_dsn: str, schema: str
) -> None:
    store = PostgresStore(
        f"{pg_dsn}?schema={schema}&max_size=1&statement_timeout=0.2&call_timeout=0.4"
    )
    await store.open()
    try:
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as other:
            await other.execute("SELECT pg_advisory_lock(%s)", (lock_key(schema),))
            migrating = asyncio.create_task(store.migrate())
            await asyncio.sleep(1.0)  # past both timeouts: the migration still waits
            assert not migrating.done(), migrating.exception()
            await other.execute("SELECT pg_advisory_unlock(%s)", (lock_key(schema),))
            applied = await asyncio.wait_for(migrating, 30)
        assert len(applied) == LATEST_VERSION
        assert await store.count_jobs() == {}
    finally:
        await store.close()


async def test_a_bulk_enqueue_is_not_cut_short_by_statement_timeout(
    store: PostgresStore, pg_dsn: str, schema: str
) -> None:
    # 50 ms is far less than encoding and copying 20,000 jobs takes: the COPY runs without
    # the server's statement clock, bounded by its progress instead.
    tight = PostgresStore(f"{pg_dsn}?schema={schema}&statement_timeout=0.05")
    await tight.open()
    try:
        started = time.monotonic()
        made = await tight.enqueue([make_new_job() for _ in range(20_000)])
        assert len(made) == 20_000
        assert time.monotonic() - started > 0.05  # else this test proves nothing
        made = await asyncio.to_thread(
            tight.sync().enqueue, [make_new_job() for _ in range(20_000)]
        )
        assert len(made) == 20_000
        assert sum((await store.count_jobs()).values()) == 40_000
    finally:
        await tight.close()


async def test_the_store_sessions_carry_the_timeouts_and_keepalives(
    pg_dsn: str, schema: str
) -> None:
    store = PostgresStore(
        f"{pg_dsn}?schema={schema}&statement_timeout=7&lock_timeout=1.5"
        "&idle_in_transaction_session_timeout=20&keepalives_idle=11"
    )
    await store.open()
    try:
        pool = await store._get_pool()
        async with pool.connection() as conn:
            settings = {}
            for name in (
                "statement_timeout",
                "lock_timeout",
                "idle_in_transaction_session_timeout",
            ):
                cur = await conn.execute(f"SHOW {name}")
                settings[name] = (await cur.fetchall())[0][0]
            libpq = conn.info.get_parameters()
        assert settings == {
            "statement_timeout": "7s",
            "lock_timeout": "1500ms",
            "idle_in_transaction_session_timeout": "20s",
        }
        assert libpq["keepalives_idle"] == "11"  # the URL's, over our default
        assert libpq["keepalives_interval"] == "5"
        assert libpq["keepalives_count"] == "3"
        assert libpq["tcp_user_timeout"] == "30000"
    finally:
        await store.close()


async def test_a_call_waits_for_a_busy_pool_while_the_server_is_up(
    pg_dsn: str, schema: str
) -> None:
    app = "dispatch_test_busy"
    store = PostgresStore(f"{pg_dsn}?schema={schema}&max_size=1&application_name={app}")
    await store.open()
    await store.migrate()
    try:
        (job,) = await store.enqueue([make_new_job()])
        async with (
            await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as admin,
            await psycopg.AsyncConnection.connect(pg_dsn) as locker,
        ):
            await locker.execute(f'LOCK TABLE "{schema}".jobs IN ACCESS EXCLUSIVE MODE')
            holding = asyncio.create_task(store.count_jobs())  # takes the only connection

            async def blocked() -> bool:
                cur = await admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                    "AND wait_event_type = 'Lock'",
                    (app,),
                )
                return bool((await cur.fetchall())[0][0] == 1)

            for _ in range(1000):
                if await blocked():
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the first call never waited for the table lock")
            waiting = asyncio.create_task(store.get_job(job.id))
            await asyncio.sleep(1.2)  # past two of the waits after which the server is probed
            assert not waiting.done(), waiting.exception()  # the server is up: it waits on
            await locker.rollback()
            assert (await asyncio.wait_for(holding, 10)) == {JobState.PENDING: 1}
            assert (await asyncio.wait_for(waiting, 10)).id == job.id
    finally:
        await store.close()
