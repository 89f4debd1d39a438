"""Behaviour specific to the PostgreSQL store, beyond the conformance suite."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from dispatch_core.errors import PayloadError
from dispatch_core.models import (
    DLQFilter,
    Job,
    JobFilter,
    Outcome,
    OutcomeKind,
    RunnableCount,
    utcnow,
)
from dispatch_core.states import JobState
from dispatch_core.testing import make_new_job
from dispatch_plugins.postgres import PostgresStore
from dispatch_plugins.postgres.ops import COPY_MIN_ROWS

from .conftest import DSN


async def _claim(store: PostgresStore, limit: int = 10, **kw: Any) -> list[Job]:
    args: dict[str, Any] = {
        "worker_id": "w",
        "queues": None,
        "names": None,
        "limit": limit,
        "lease_seconds": 30,
        "now": utcnow(),
    }
    args.update(kw)
    return await store.claim(**args)


@pytest.mark.parametrize("count", [3, COPY_MIN_ROWS + 50])
async def test_batches_round_trip_every_field(store: PostgresStore, count: int) -> None:
    news = [
        make_new_job(
            f"n{i % 3}",
            queue=f"q{i % 2}",
            payload={"i": i, "s": "é\n\"'", "l": [1, 2.5, None, True]},
            priority=i % 5 - 2,
            tenant=None if i % 2 else "acme",
            headers={"h": str(i)} if i % 3 else {},
            timeout=None if i % 4 else 1.5,
            max_attempts=i % 7 + 1,
        )
        for i in range(count)
    ]
    jobs = await store.enqueue(news)
    assert [j.id for j in jobs] == [n.id for n in news]
    stored = {j.id: j for j in await store.list_jobs(JobFilter(limit=count))}
    for new, returned in zip(news, jobs, strict=True):
        got = stored[new.id]
        assert got == returned
        assert (got.name, got.queue, got.payload, got.priority) == (
            new.name,
            new.queue,
            new.payload,
            new.priority,
        )
        assert (got.tenant, got.headers, got.timeout, got.max_attempts) == (
            new.tenant,
            new.headers,
            new.timeout,
            new.max_attempts,
        )
        assert got.run_at == new.run_at
        assert got.created_at == got.updated_at == new.created_at
        assert got.run_at.tzinfo is UTC


@pytest.mark.parametrize("count", [4, COPY_MIN_ROWS + 50])
async def test_unique_keys_within_and_across_batches(store: PostgresStore, count: int) -> None:
    (held,) = await store.enqueue([make_new_job(unique_key="k-held")])
    news = [make_new_job(payload={"i": i}) for i in range(count - 3)] + [
        make_new_job(unique_key="k-new"),
        make_new_job(unique_key="k-held"),
        make_new_job(unique_key="k-new"),  # the same key twice in one batch
    ]
    jobs = await store.enqueue(news)
    assert len(jobs) == count
    assert [j.id for j in jobs[:-3]] == [n.id for n in news[:-3]]
    new_holder, old_holder, duplicate = jobs[-3:]
    assert new_holder.id == news[-3].id
    assert old_holder.id == held.id
    assert duplicate.id == new_holder.id
    assert sum((await store.count_jobs()).values()) == 1 + count - 2


async def test_outcomes_for_one_attempt_are_applied_in_order(store: PostgresStore) -> None:
    await store.enqueue([make_new_job(), make_new_job()])
    a, b = await _claim(store, limit=2)
    now = utcnow()
    written = await store.finish(
        [
            Outcome(job_id=a.id, attempt_token=a.attempt_token or "", kind=OutcomeKind.COMPLETED),
            Outcome(job_id=a.id, attempt_token=a.attempt_token or "", kind=OutcomeKind.FAIL),
            Outcome(job_id=b.id, attempt_token="stale", kind=OutcomeKind.FAIL),
            Outcome(job_id=b.id, attempt_token=b.attempt_token or "", kind=OutcomeKind.RELEASE),
        ],
        now=now,
    )
    assert written == [True, False, False, True]
    assert (await store.get_job(a.id)).state is JobState.COMPLETED
    assert (await store.get_job(b.id)).state is JobState.PENDING
    assert await store.list_dlq(DLQFilter()) == []


async def test_nul_characters(store: PostgresStore) -> None:
    with pytest.raises(PayloadError, match="NUL"):
        await store.enqueue([make_new_job("nul", payload={"s": "a\x00b"})])
    # a literal backslash-u0000 is not a NUL
    (ok,) = await store.enqueue([make_new_job(payload={"s": "\\u0000"})])
    assert (await store.get_job(ok.id)).payload == {"s": "\\u0000"}
    await store.enqueue([make_new_job(), make_new_job()])
    a, b = await _claim(store, limit=2)
    # a result or an error holding NUL must not make the whole batch fail
    assert await store.finish(
        [
            Outcome(
                job_id=a.id,
                attempt_token=a.attempt_token or "",
                kind=OutcomeKind.COMPLETED,
                result={"k\x00": ["x\x00y"]},
            ),
            Outcome(
                job_id=b.id,
                attempt_token=b.attempt_token or "",
                kind=OutcomeKind.FAIL,
                error="e\x00",
            ),
        ],
        now=utcnow(),
    ) == [True, True]
    assert (await store.get_job(a.id)).result == {"k\ufffd": ["x\ufffdy"]}
    assert (await store.get_job(b.id)).last_error == "e\\x00"
    assert (await store.list_dlq(DLQFilter()))[0].error == "e\\x00"


async def test_naive_datetimes_are_utc(store: PostgresStore) -> None:
    naive_now = datetime.now(UTC).replace(tzinfo=None)
    (job,) = await store.enqueue([make_new_job(run_at=naive_now + timedelta(seconds=60))])
    assert await _claim(store, now=naive_now) == []
    (claimed,) = await _claim(store, now=naive_now + timedelta(seconds=61))
    assert claimed.id == job.id
    assert claimed.started_at == (naive_now + timedelta(seconds=61)).replace(tzinfo=UTC)


async def test_times_read_through_a_callers_connection_are_utc(store: PostgresStore) -> None:
    (held,) = await store.enqueue([make_new_job(unique_key="tz")])
    async with await psycopg.AsyncConnection.connect(DSN) as conn:
        await conn.execute("SET TIME ZONE 'Asia/Tokyo'")
        (job,) = await store.enqueue_in(conn, [make_new_job(unique_key="tz")])
        await conn.rollback()
    assert job.id == held.id
    assert job.created_at.tzinfo is UTC
    assert job.created_at == held.created_at


async def test_next_run_at_filters(store: PostgresStore) -> None:
    now = utcnow()
    await store.enqueue(
        [
            make_new_job("a", queue="q1", run_at=now + timedelta(hours=3)),
            make_new_job("b", queue="q1", run_at=now + timedelta(hours=2)),
            make_new_job("a", queue="q2", run_at=now + timedelta(hours=1)),
        ]
    )

    async def nxt(queues: list[str] | None, names: list[str] | None) -> float | None:
        at = await store.next_run_at(queues=queues, names=names)
        return None if at is None else round((at - now) / timedelta(hours=1))

    assert await nxt(None, None) == 1
    assert await nxt(["q1"], None) == 2
    assert await nxt(["q1"], ["a"]) == 3
    assert await nxt(["q3"], None) is None
    assert await nxt([], None) is None


async def test_rescue_skips_rows_another_transaction_holds(store: PostgresStore) -> None:
    await store.enqueue([make_new_job(), make_new_job()])
    t0 = utcnow()
    a, b = await _claim(store, limit=2, now=t0, lease_seconds=1)
    later = t0 + timedelta(seconds=5)
    async with await psycopg.AsyncConnection.connect(DSN) as holder:
        await holder.execute(
            f'SELECT 1 FROM "{store.schema}".jobs WHERE id = %s FOR UPDATE', (a.id,)
        )
        rescued = await asyncio.wait_for(store.rescue_expired(now=later), 5)  # no waiting
        assert [j.id for j in rescued] == [b.id]
        await holder.rollback()
    assert [j.id for j in await store.rescue_expired(now=later)] == [a.id]


def _child(queue: multiprocessing.Queue[str]) -> None:
    async def main() -> str:
        store = _inherited[0]
        (job,) = await _claim(store)  # the child makes a pool of its own
        await store.close()  # and closes only that one
        return str(job.id)

    queue.put(asyncio.run(main()))


_inherited: list[PostgresStore] = []


@pytest.mark.skipif(sys.platform != "linux", reason="fork() is the Linux default")
@pytest.mark.slow
async def test_a_forked_child_makes_its_own_pool(store: PostgresStore) -> None:
    (job,) = await store.enqueue([make_new_job()])
    _inherited[:] = [store]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue,))
    proc.start()
    try:
        claimed = await asyncio.to_thread(queue.get, True, 30)
        await asyncio.to_thread(proc.join, 30)
    finally:
        _inherited.clear()
    assert proc.exitcode == 0
    assert claimed == job.id
    # the parent's pool was left alone: its connections still work (a write is not retried,
    # so a connection the child had closed would fail here)
    assert (await store.cancel(job.id, now=utcnow())).state is JobState.CANCELLED
    assert store._pool is not None
    assert store._pool.get_stats().get("connections_lost", 0) == 0
    assert os.getpid() == store._pool_pid


async def test_the_store_sessions_are_utc_and_claims_walk_the_claim_index(
    store: PostgresStore,
) -> None:
    # A fresh table has no statistics: left alone, the planner may fetch every runnable job
    # and sort them on each claim. The store's sessions rule that out.
    await store.enqueue([make_new_job(payload={"i": i}) for i in range(3000)])
    assert store._pool is not None
    async with store._pool.connection() as conn:
        cur = await conn.execute(
            "SELECT current_setting('TimeZone'), current_setting('enable_sort')"
        )
        assert await cur.fetchone() == ("UTC", "off")
        now = utcnow()
        cur = await conn.execute(
            "EXPLAIN " + store._q.claim(True, True),
            {
                "worker_id": "w",
                "now": now,
                "until": now,
                "limit": 10,
                "queues": ["default"],
                "names": ["conformance.job"],
            },
        )
        plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "jobs_claim_idx" in plan
    assert "Sort" not in plan


@pytest.mark.parametrize("setting", ["off", "on"])
async def test_relaxed_worker_commits_stay_inside_their_statement(
    pg_url: str, setting: str
) -> None:
    store = PostgresStore(f"{pg_url}&worker_synchronous_commit={setting}&max_size=1")
    await store.open()
    await store.migrate()
    try:
        assert ("synchronous_commit" in store._q.claim(False, False)) is (setting == "off")
        await store.enqueue([make_new_job()])
        (job,) = await _claim(store)
        assert (
            await store.heartbeat(
                worker_id="w",
                leases={job.id: job.attempt_token or ""},
                lease_seconds=30,
                now=utcnow(),
            )
            == set()
        )
        assert store._pool is not None
        async with store._pool.connection() as conn:  # the only connection: the one just used
            cur = await conn.execute("SELECT current_setting('synchronous_commit')")
            assert await cur.fetchone() == ("on",)
    finally:
        await store.close()


def _table(rows: list[RunnableCount]) -> list[tuple[str, str, int]]:
    return [(r.queue, r.name, r.count) for r in rows]


async def test_count_runnable_neither_locks_rows_nor_waits_for_claims(
    store: PostgresStore, pg_dsn: str
) -> None:
    await store.enqueue([make_new_job("a", queue="q") for _ in range(4)])
    with psycopg.connect(pg_dsn) as other:  # not autocommit: its statements stay in one transaction
        # A claim in flight holds the runnable rows locked: the count does not wait for it.
        other.execute(f'SELECT id FROM "{store.schema}".jobs FOR UPDATE').fetchall()
        rows = await asyncio.wait_for(store.count_runnable(now=utcnow()), timeout=10)
        assert _table(rows) == [("q", "a", 4)]
        other.rollback()
        # The count's own statement, its transaction left open, holds no row lock (a claim
        # would skip such rows): it takes the lock every plain read takes, and nothing else.
        params = {"now": utcnow(), "tenant": None, "excluded": ["b"]}
        assert other.execute(store._q.count_runnable(False), params).fetchall() == [("q", "a", 4)]
        locks = other.execute(
            "SELECT mode FROM pg_locks WHERE pid = pg_backend_pid() AND relation = %s::regclass",
            (f'"{store.schema}".jobs',),
        ).fetchall()
        assert locks == [("AccessShareLock",)]
        claimed = await asyncio.wait_for(_claim(store), timeout=10)
        assert len(claimed) == 4
        other.rollback()


async def test_count_runnable_walks_the_due_index(store: PostgresStore, pg_dsn: str) -> None:
    # Mostly finished jobs, as with retention keeping a day of them: the count must read the
    # due rows through jobs_due_idx, not the whole table.
    await store.enqueue([make_new_job(f"n{i % 3}", tenant=f"t{i % 2}") for i in range(3000)])
    jobs = f'"{store.schema}".jobs'
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            f"UPDATE {jobs} SET state = 'completed', finished_at = now()"
            f" WHERE id IN (SELECT id FROM {jobs} ORDER BY id LIMIT 2700)"
        )
        conn.execute(f"ANALYZE {jobs}")
    assert store._pool is not None
    async with store._pool.connection() as conn:  # the store's session: generic plans
        for by_tenant in (False, True):
            sql = store._q.count_runnable(by_tenant)
            for placeholder, n in (("%(now)b", 1), ("%(tenant)s", 2), ("%(excluded)b", 3)):
                sql = sql.replace(placeholder, f"${n}")
            await conn.execute(f"PREPARE count_runnable (timestamptz, text, text[]) AS {sql}")
            cur = await conn.execute("EXPLAIN EXECUTE count_runnable(now(), 't1', '{n1}')")
            plan = "\n".join(row[0] for row in await cur.fetchall())
            await conn.execute("DEALLOCATE count_runnable")
            assert "jobs_due_idx" in plan, plan
            assert "Seq Scan" not in plan, plan
    rows = await store.count_runnable(now=utcnow(), tenant="t1", exclude_names=["n1"])
    assert _table(rows) == [("default", "n0", 50), ("default", "n2", 50)]
