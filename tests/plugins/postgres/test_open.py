"""Opening and closing, and clear errors when the server cannot be used or goes away."""

from __future__ import annotations

import asyncio
import secrets
import time

import psycopg
import pytest

from dispatch_core import Engine
from dispatch_core.errors import StoreUnavailableError
from dispatch_core.models import utcnow
from dispatch_core.testing import make_new_job
from dispatch_plugins.postgres import PostgresStore

from .conftest import DSN, with_params


async def test_open_is_idempotent_and_a_closed_store_reopens(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    await store.open()
    await store.migrate()
    (job,) = await store.enqueue([make_new_job()])
    await store.close()
    await store.close()
    await store.open()
    try:
        assert (await store.get_job(job.id)).id == job.id
    finally:
        await store.close()


async def test_methods_before_open_raise_a_clear_error(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    with pytest.raises(StoreUnavailableError, match=r"not open.*store\.open\(\)"):
        await store.get_job("job_01h455vb4pex5vsknk084sn02q")
    with pytest.raises(StoreUnavailableError, match="not open"):
        await store.claim(
            worker_id="w", queues=None, names=None, limit=1, lease_seconds=1, now=utcnow()
        )


async def test_missing_schema_says_to_migrate(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        with pytest.raises(StoreUnavailableError, match=r"missing.*store\.migrate\(\)"):
            await store.get_job("job_01h455vb4pex5vsknk084sn02q")
        with pytest.raises(StoreUnavailableError, match="migrate"):
            await store.enqueue([make_new_job()])
    finally:
        await store.close()


async def test_unreachable_server_fails_fast_and_names_it() -> None:
    store = PostgresStore("postgresql://app:hunter2@127.0.0.1:1/jobs?connect_timeout=2")
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailableError) as info:
        await store.open()
    assert time.monotonic() - t0 < 5
    message = str(info.value)
    assert "app@127.0.0.1:1/jobs" in message
    assert "refused" in message.lower()
    assert "hunter2" not in message
    assert "hunter2" not in repr(info.value.__cause__ or "")
    # it stays closed and usable for another attempt
    with pytest.raises(StoreUnavailableError, match="not open"):
        await store.get_job("job_01h455vb4pex5vsknk084sn02q")


def test_unreachable_server_through_the_engine_and_the_sync_producer() -> None:
    url = "postgresql://127.0.0.1:1/jobs?connect_timeout=2"
    engine = Engine(url)
    with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1:1"):
        asyncio.run(engine.aopen())
    store = PostgresStore(url)
    with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1:1.*refused"):
        store.sync().enqueue([make_new_job()])


async def test_missing_database(pg_dsn: str) -> None:
    name = f"no_such_db_{secrets.token_hex(3)}"
    host = DSN.rsplit("/", 1)[0]
    with pytest.raises(StoreUnavailableError, match=rf"/{name}: .*{name}.* does not exist"):
        await PostgresStore(f"{host}/{name}").open()


async def test_unknown_role(pg_dsn: str) -> None:
    after = DSN.split("://", 1)[1].split("@", 1)[-1]
    with pytest.raises(StoreUnavailableError, match=r"nobody_here@.*role \"nobody_here\""):
        await PostgresStore(f"postgresql://nobody_here@{after}").open()


async def _terminate(app: str) -> int:
    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as admin:
        cur = await admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s",
            (app,),
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_lost_connections_raise_unavailable_then_the_pool_recovers(
    pg_dsn: str, schema: str
) -> None:
    app = f"dispatch_test_{secrets.token_hex(3)}"
    store = PostgresStore(with_params(pg_dsn, schema=schema, min_size="2", application_name=app))
    await store.open()
    await store.migrate()
    try:
        (job,) = await store.enqueue([make_new_job()])
        assert await _terminate(app) >= 1
        # a read is run again on a fresh connection: the caller sees nothing
        assert (await store.get_job(job.id)).id == job.id
        assert await _terminate(app) >= 1
        # a write is not (it may have committed): it fails with StoreUnavailableError...
        with pytest.raises(StoreUnavailableError, match="PostgreSQL at"):
            await store.claim(
                worker_id="w", queues=None, names=None, limit=1, lease_seconds=30, now=utcnow()
            )
        # ...and once the pool has replaced its dead connections, writes work again
        for _ in range(50):
            try:
                claimed = await store.claim(
                    worker_id="w", queues=None, names=None, limit=1, lease_seconds=30, now=utcnow()
                )
                break
            except StoreUnavailableError:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the pool did not recover")
        assert [j.id for j in claimed] == [job.id]
    finally:
        await store.close()
