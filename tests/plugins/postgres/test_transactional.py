"""Transactional enqueue: jobs written through the caller's connection, in its transaction."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import psycopg
import pytest

from dispatch_core import Engine
from dispatch_core.errors import ConfigurationError, JobNotFoundError
from dispatch_core.states import JobState
from dispatch_core.testing import make_new_job
from dispatch_plugins.postgres import PostgresStore, WrongConnectionError

from .conftest import DSN
from .test_listen import Wakes


async def _orders_table(conn: psycopg.AsyncConnection, schema: str) -> None:
    await conn.execute(f'CREATE TABLE "{schema}".orders (id int PRIMARY KEY)')
    await conn.commit()


async def test_async_rollback_leaves_nothing_and_commit_wakes(
    store: PostgresStore, schema: str
) -> None:
    wakes = Wakes()
    stop = await store.listen(wakes)
    conn = await psycopg.AsyncConnection.connect(DSN)  # not autocommit: a real transaction
    try:
        await _orders_table(conn, schema)
        # rolled back: neither the order nor the job exists
        await conn.execute(f'INSERT INTO "{schema}".orders VALUES (1)')
        (lost,) = await store.enqueue_in(conn, [make_new_job()])
        await conn.rollback()
        with pytest.raises(JobNotFoundError):
            await store.get_job(lost.id)
        assert await wakes.quiet()  # a rolled-back notification is never delivered

        # committed: both exist, and listeners hear of it only at the commit
        await conn.execute(f'INSERT INTO "{schema}".orders VALUES (2)')
        jobs = await store.enqueue_in(conn, [make_new_job(), make_new_job(unique_key="o-2")])
        with pytest.raises(JobNotFoundError):  # not visible before the commit
            await store.get_job(jobs[0].id)
        assert await wakes.quiet()
        wakes.arm()
        await conn.commit()
        await wakes.wait()
        assert (await store.get_job(jobs[0].id)).id == jobs[0].id
        # the unique key is held now, by the committed job
        (again,) = await store.enqueue_in(conn, [make_new_job(unique_key="o-2")])
        await conn.commit()
        assert again.id == jobs[1].id
    finally:
        await conn.close()
        await stop()


async def test_a_large_batch_goes_through_the_callers_transaction_too(
    store: PostgresStore,
) -> None:
    async with await psycopg.AsyncConnection.connect(DSN) as conn:
        jobs = await store.enqueue_in(conn, [make_new_job(payload={"i": i}) for i in range(500)])
        await conn.rollback()
        assert sum((await store.count_jobs()).values()) == 0
        await store.enqueue_in(conn, [make_new_job(payload={"i": i}) for i in range(500)])
        await conn.commit()
    assert (await store.count_jobs()) == {JobState.PENDING: 500}
    assert len(jobs) == 500


async def test_sync_rollback_leaves_nothing_and_commit_wakes(
    store: PostgresStore, schema: str
) -> None:
    wakes = Wakes()
    stop = await store.listen(wakes)
    sync = store.sync()

    def produce(commit: bool) -> str:
        with psycopg.connect(DSN) as conn:
            (job,) = sync.enqueue_in(conn, [make_new_job()])
            if commit:
                conn.commit()
            else:
                conn.rollback()
        return job.id

    try:
        lost = await asyncio.to_thread(produce, False)
        with pytest.raises(JobNotFoundError):
            await store.get_job(lost)
        assert await wakes.quiet()
        wakes.arm()
        kept = await asyncio.to_thread(produce, True)
        await wakes.wait()
        assert (await store.get_job(kept)).id == kept
    finally:
        await stop()


async def test_wrong_connections_are_refused_clearly(store: PostgresStore) -> None:
    with pytest.raises(WrongConnectionError, match=r"psycopg\.AsyncConnection, got sqlite3"):
        await store.enqueue_in(sqlite3.connect(":memory:"), [make_new_job()])
    sync_conn: psycopg.Connection[Any] = await asyncio.to_thread(psycopg.Connection.connect, DSN)
    try:
        with pytest.raises(TypeError, match=r"blocking psycopg.Connection.*engine\.enqueue"):
            await store.enqueue_in(sync_conn, [make_new_job()])
    finally:
        sync_conn.close()
    async with await psycopg.AsyncConnection.connect(DSN) as aconn:
        with pytest.raises(ConfigurationError, match=r"AsyncConnection.*aenqueue"):
            store.sync().enqueue_in(aconn, [make_new_job()])
    assert issubclass(WrongConnectionError, TypeError)


async def test_engine_aenqueue_with_conn(pg_url: str) -> None:
    engine = Engine(pg_url)

    @engine.job(name="mail")
    async def mail(to: str) -> None: ...

    try:
        async with await psycopg.AsyncConnection.connect(DSN) as conn:
            job = await mail.aenqueue("a@example.com", conn=conn)
            await conn.rollback()
            with pytest.raises(JobNotFoundError):
                await engine.aget_job(job.id)
            job = await mail.aenqueue("b@example.com", conn=conn)
            await conn.commit()
        assert (await engine.aget_job(job.id)).payload == "b@example.com"
    finally:
        await engine.aclose()


def test_engine_enqueue_with_conn(pg_url: str) -> None:
    engine = Engine(pg_url)

    @engine.job(name="mail")
    def mail(to: str) -> None: ...

    try:
        with psycopg.connect(DSN) as conn:
            job = mail.enqueue("a@example.com", conn=conn)
            conn.rollback()
            with pytest.raises(JobNotFoundError):
                engine.get_job(job.id)
            job = mail.enqueue("b@example.com", conn=conn)
        # the connection's context manager committed
        assert engine.get_job(job.id).payload == "b@example.com"
    finally:
        engine.close()
