"""Opening and closing, and clear errors when the server cannot be used or goes away."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import psycopg
import pytest

from dispatch_core import Engine
from dispatch_core.errors import StoreUnavailableError
from dispatch_core.models import utcnow
from dispatch_core.states import JobState
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


async def _backends(admin: psycopg.AsyncConnection[Any], app: str, where: str = "") -> list[int]:
    cur = await admin.execute(
        f"SELECT pid FROM pg_stat_activity WHERE application_name = %s {where}", (app,)
    )
    return [int(pid) for (pid,) in await cur.fetchall()]


async def _until_backends(
    admin: psycopg.AsyncConnection[Any], app: str, where: str, wanted: int
) -> list[int]:
    """Wait until ``wanted`` backends of ``app`` match ``where``; return their pids."""
    for _ in range(500):
        pids = await _backends(admin, app, where)
        if len(pids) == wanted:
            return pids
        await asyncio.sleep(0.01)
    pytest.fail(f"never {wanted} backends of {app} {where}")


async def test_connections_found_dead_before_use_are_replaced_for_any_call(
    pg_dsn: str, schema: str
) -> None:
    app = f"dispatch_test_{secrets.token_hex(3)}"
    store = PostgresStore(with_params(pg_dsn, schema=schema, min_size="3", application_name=app))
    await store.open()
    await store.migrate()
    try:
        (job,) = await store.enqueue([make_new_job()])
        await asyncio.gather(*(store.count_jobs() for _ in range(3)))  # three idle connections
        async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as admin:
            assert await _terminate(app) >= 3
            await _until_backends(admin, app, "", 0)  # gone: their sockets say so
        # Nothing was sent on a dead connection: a write goes on with a fresh one, safely.
        claimed = await store.claim(
            worker_id="w", queues=None, names=None, limit=1, lease_seconds=30, now=utcnow()
        )
        assert [j.id for j in claimed] == [job.id]
    finally:
        await store.close()


async def test_a_connection_lost_under_a_call_reruns_a_read_but_not_a_write(
    pg_dsn: str, schema: str
) -> None:
    app = f"dispatch_test_{secrets.token_hex(3)}"
    store = PostgresStore(with_params(pg_dsn, schema=schema, max_size="1", application_name=app))
    await store.open()
    await store.migrate()
    waiting = "AND wait_event_type = 'Lock'"
    try:
        (job,) = await store.enqueue([make_new_job()])
        async with (
            await psycopg.AsyncConnection.connect(DSN, autocommit=True) as admin,
            await psycopg.AsyncConnection.connect(DSN) as locker,
        ):
            # A read blocked by a table lock, whose connection is killed: it is run again on
            # a fresh connection, and the caller sees nothing.
            await locker.execute(f'LOCK TABLE "{schema}".jobs IN ACCESS EXCLUSIVE MODE')
            reading = asyncio.create_task(store.get_job(job.id))
            (pid,) = await _until_backends(admin, app, waiting, 1)
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            # Waiting once more, on a new connection.
            await _until_backends(admin, app, f"{waiting} AND pid <> {pid}", 1)
            await locker.rollback()
            assert (await asyncio.wait_for(reading, 10)).id == job.id

            # A write blocked by the job's row lock, whose connection is killed: it may have
            # committed, so it is not run again; it fails with StoreUnavailableError.
            await locker.execute(
                f'SELECT 1 FROM "{schema}".jobs WHERE id = %s FOR UPDATE', (job.id,)
            )
            cancelling = asyncio.create_task(store.cancel(job.id, now=utcnow()))
            (pid,) = await _until_backends(admin, app, waiting, 1)
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with pytest.raises(StoreUnavailableError, match="PostgreSQL at"):
                await asyncio.wait_for(cancelling, 10)
            await locker.rollback()
        assert (await store.get_job(job.id)).state is JobState.PENDING  # not cancelled
        # ...and the store works on.
        assert (await store.cancel(job.id, now=utcnow())).state is JobState.CANCELLED
    finally:
        await store.close()
