"""Behaviour beyond the conformance suite: batching edges, atomicity, times, DLQ details."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone

import pytest

from dispatch_core.errors import StoreUnavailableError
from dispatch_core.models import DLQFilter, Job, JobFilter, Outcome, OutcomeKind, SortOrder, utcnow
from dispatch_core.states import JobState
from dispatch_core.testing import make_new_job
from dispatch_plugins.sqlite import SQLiteStore, ops
from dispatch_plugins.sqlite.ops.jobs import _COUNT_RUNNABLE


async def _claim(store: SQLiteStore, limit: int = 10, **kw: object) -> list[Job]:
    args: dict[str, object] = {
        "worker_id": "wkr_t",
        "queues": None,
        "names": None,
        "limit": limit,
        "lease_seconds": 30.0,
        "now": utcnow(),
    }
    args.update(kw)
    return await store.claim(**args)  # type: ignore[arg-type]


def _done(job: Job, kind: OutcomeKind = OutcomeKind.COMPLETED, **kw: object) -> Outcome:
    assert job.attempt_token is not None
    return Outcome(job_id=job.id, attempt_token=job.attempt_token, kind=kind, **kw)  # type: ignore[arg-type]


async def test_large_batches_are_split_across_statements(store: SQLiteStore) -> None:
    await store.enqueue([make_new_job(payload={"i": i}) for i in range(700)])
    claimed = await _claim(store, limit=700)
    assert len(claimed) == 700
    tokens = {j.id: j.attempt_token or "" for j in claimed}
    lost = await store.heartbeat(
        worker_id="wkr_t", leases={**tokens, "job_gone": "x"}, lease_seconds=60, now=utcnow()
    )
    assert lost == {"job_gone"}
    ok = await store.finish(
        [_done(j, result={"i": n}) for n, j in enumerate(claimed)], now=utcnow()
    )
    assert ok == [True] * 700
    assert await store.count_jobs() == {JobState.COMPLETED: 700}


async def test_the_same_job_twice_in_one_batch_is_written_once(store: SQLiteStore) -> None:
    await store.enqueue([make_new_job()])
    (job,) = await _claim(store)
    ok = await store.finish([_done(job, result=1), _done(job, result=2)], now=utcnow())
    assert ok == [True, False]
    assert (await store.get_job(job.id)).result == 1


async def test_claim_with_nothing_to_match(store: SQLiteStore) -> None:
    await store.enqueue([make_new_job()])
    assert await _claim(store, limit=0) == []
    assert await _claim(store, queues=[]) == []
    assert await _claim(store, names=[]) == []
    assert await store.next_run_at(queues=[], names=None) is None
    assert len(await _claim(store)) == 1


async def test_claim_order_within_a_priority(store: SQLiteStore) -> None:
    base = utcnow() - timedelta(minutes=1)
    news = [make_new_job(run_at=base + timedelta(seconds=i % 5)) for i in range(25)]
    await store.enqueue(news[::-1])
    claimed = await _claim(store, limit=25)
    expected = sorted(news, key=lambda n: (n.run_at, n.id))
    assert [j.id for j in claimed] == [n.id for n in expected]


async def test_next_run_at_honours_queue_and_name(store: SQLiteStore) -> None:
    now = utcnow()
    await store.enqueue(
        [
            make_new_job("a", queue="q1", run_at=now + timedelta(hours=1)),
            make_new_job("b", queue="q1", run_at=now + timedelta(hours=2)),
            make_new_job("a", queue="q2", run_at=now + timedelta(hours=3)),
        ]
    )

    async def nxt(queues: list[str] | None, names: list[str] | None) -> float:
        due = await store.next_run_at(queues=queues, names=names)
        assert due is not None
        return round((due - now).total_seconds() / 3600)

    assert await nxt(None, None) == 1
    assert await nxt(["q1"], ["b"]) == 2
    assert await nxt(["q2"], None) == 3
    assert await store.next_run_at(queues=["q3"], names=None) is None


async def test_release_gives_back_the_attempt_and_keeps_an_earlier_run_at(
    store: SQLiteStore,
) -> None:
    await store.enqueue([make_new_job(max_attempts=3)])
    (job,) = await _claim(store)
    later = utcnow() + timedelta(seconds=5)
    assert await store.finish([_done(job, OutcomeKind.RELEASE)], now=later) == [True]
    released = await store.get_job(job.id)
    assert released.state is JobState.PENDING
    assert released.attempt == 0
    assert released.run_at == job.run_at  # min(run_at, now) keeps the original
    assert (released.worker_id, released.attempt_token, released.lease_expires_at) == (
        None,
        None,
        None,
    )


async def test_a_failure_and_its_dead_letter_entry_land_together(
    store: SQLiteStore,
) -> None:
    await store.enqueue([make_new_job(max_attempts=1)])
    (job,) = await _claim(store)
    raw = sqlite3.connect(store.path, isolation_level=None)
    try:
        raw.execute("ALTER TABLE dlq RENAME TO dlq_away")  # the dead-letter write will fail
        with pytest.raises(StoreUnavailableError, match="dlq"):
            await store.finish([_done(job, OutcomeKind.FAIL, error="boom")], now=utcnow())
        assert (await store.get_job(job.id)).state is JobState.RUNNING  # rolled back
        raw.execute("ALTER TABLE dlq_away RENAME TO dlq")
    finally:
        raw.close()
    assert await store.finish([_done(job, OutcomeKind.FAIL)], now=utcnow()) == [True]
    (entry,) = await store.list_dlq(DLQFilter())
    assert entry.error == ""  # no message given
    failed = await store.get_job(job.id)
    assert failed.state is JobState.FAILED
    assert failed.finished_at is not None


async def test_rescue_dead_letters_exhausted_jobs(store: SQLiteStore) -> None:
    await store.enqueue([make_new_job(max_attempts=1), make_new_job(max_attempts=2)])
    t0 = utcnow()
    claimed = await _claim(store, now=t0, lease_seconds=1, worker_id="wkr_gone")
    rescued = await store.rescue_expired(now=t0 + timedelta(seconds=2))
    assert [j.id for j in rescued] == sorted(j.id for j in claimed)
    states = {j.max_attempts: j for j in rescued}
    assert states[1].state is JobState.FAILED
    assert states[1].finished_at == t0 + timedelta(seconds=2)
    assert states[2].state is JobState.RETRYING
    assert states[2].run_at == t0 + timedelta(seconds=2)
    for j in rescued:
        assert (
            j.last_error == "worker wkr_gone died or stalled: its lease expired without a heartbeat"
        )
        assert j.attempt_token is None
    (entry,) = await store.list_dlq(DLQFilter())
    assert entry.job_id == states[1].id
    assert entry.error == states[1].last_error
    assert await store.rescue_expired(now=t0 + timedelta(seconds=3)) == []


async def test_times_come_back_aware_in_utc(store: SQLiteStore) -> None:
    plus2 = timezone(timedelta(hours=2))
    local = datetime(2030, 1, 2, 12, 30, 15, 123456, tzinfo=plus2)
    naive = datetime(2030, 1, 2, 10, 30, 15, 123456)  # taken as UTC
    a, b = await store.enqueue([make_new_job(run_at=local), make_new_job(run_at=naive)])
    for returned in (a, b):
        stored = await store.get_job(returned.id)
        for j in (returned, stored):
            assert j.run_at == datetime(2030, 1, 2, 10, 30, 15, 123456, tzinfo=UTC)
            assert j.run_at.utcoffset() == timedelta(0)


async def test_a_unique_key_repeated_in_one_batch(store: SQLiteStore) -> None:
    first, dup, other = await store.enqueue(
        [make_new_job(unique_key="k"), make_new_job(unique_key="k"), make_new_job()]
    )
    assert dup.id == first.id
    assert other.id != first.id
    assert len(await store.list_jobs(JobFilter())) == 2


async def test_values_round_trip(store: SQLiteStore) -> None:
    payload = {"text": "héllo ✓ \u2028", "nested": {"list": [1, -2.5, None, False]}, "big": 2**62}
    (job,) = await store.enqueue([make_new_job(payload=payload, timeout=None)])
    got = await store.get_job(job.id)
    assert got.payload == payload
    assert got.timeout is None
    assert got.headers == {}
    assert got.result is None
    (claimed,) = await _claim(store)
    await store.finish([_done(claimed, result=["ok", {"n": 1}])], now=utcnow())
    assert (await store.get_job(job.id)).result == ["ok", {"n": 1}]


async def test_list_filters_and_dlq_order(store: SQLiteStore) -> None:
    await store.enqueue(
        [
            make_new_job("n", queue=q, tenant=t, max_attempts=1)
            for q in ("a", "b")
            for t in ("x", "y")
        ]
    )
    assert len(await store.list_jobs(JobFilter(queue="a", tenant="y"))) == 1
    claimed = await _claim(store, limit=4)
    t0 = utcnow()
    for n, job in enumerate(claimed):  # failed_at going back in time, one finish after another
        await store.finish(
            [_done(job, OutcomeKind.FAIL, error=f"e{n}")], now=t0 - timedelta(seconds=n)
        )
    # listed by entry id, which is made when the failure is recorded: in the order they were
    # written, whatever failed_at says
    entries = await store.list_dlq(DLQFilter())
    assert [e.error for e in entries] == ["e0", "e1", "e2", "e3"]
    assert [e.id for e in entries] == sorted(e.id for e in entries)
    page = await store.list_dlq(DLQFilter(limit=2, offset=1))
    assert [e.error for e in page] == ["e1", "e2"]
    page = await store.list_dlq(DLQFilter(order=SortOrder.DESC, after=entries[2].id))
    assert [e.error for e in page] == ["e1", "e0"]
    assert {e.queue for e in await store.list_dlq(DLQFilter(queue="b"))} == {"b"}
    assert len(await store.list_jobs(JobFilter(state=JobState.FAILED, queue="b"))) == 2
    # the purge goes by failed_at
    assert await store.purge_dlq(before=t0 - timedelta(seconds=1.5)) == 2
    assert [e.error for e in await store.list_dlq(DLQFilter())] == ["e0", "e1"]


async def test_replaying_twice_stamps_the_latest_copy(store: SQLiteStore) -> None:
    await store.enqueue([make_new_job(max_attempts=1, headers={"h": "1"})])
    (job,) = await _claim(store)
    await store.finish([_done(job, OutcomeKind.FAIL, error="x")], now=utcnow())
    (entry,) = await store.list_dlq(DLQFilter())
    one = await store.replay_dlq(
        entry.id, new_job_id="job_01h455vb4pex5vsknk084sn02a", now=utcnow()
    )
    two = await store.replay_dlq(
        entry.id, new_job_id="job_01h455vb4pex5vsknk084sn02b", now=utcnow()
    )
    assert one.headers == {"h": "1"}
    assert (await store.get_dlq(entry.id)).replay_job_id == two.id
    assert {j.id for j in await store.list_jobs(JobFilter(state=JobState.PENDING))} == {
        one.id,
        two.id,
    }


async def test_retry_clears_the_failure(store: SQLiteStore) -> None:
    (job,) = await store.enqueue([make_new_job()])
    await store.cancel(job.id, now=utcnow())
    again = await store.retry(job.id, now=utcnow())
    assert again.state is JobState.PENDING
    assert (again.attempt, again.finished_at, again.last_error) == (0, None, None)


async def test_count_runnable_reads_only_the_runnable_rows_and_takes_no_write_lock(
    db_url: str,
) -> None:
    # A busy timeout of 50 ms: a count that needed the write lock would fail at once below.
    store = SQLiteStore(f"{db_url}?busy_timeout=50")
    await store.open()
    await store.migrate()
    try:
        await store.enqueue([make_new_job("a", queue="q") for _ in range(5)])
        await store.enqueue([make_new_job("b", queue="q", tenant="t") for _ in range(2)])
        for job in await _claim(store, limit=3, names=["a"]):
            await store.finish([_done(job)], now=utcnow())
        # The statement reads jobs_claim_idx alone (the runnable rows), never the table.
        conn = sqlite3.connect(store.path, isolation_level=None)
        try:
            conn.execute("ANALYZE")
            for tenant in ("", " AND tenant = :tenant"):
                sql = _COUNT_RUNNABLE.format(tenant=tenant)
                params = {"now": 0, "excluded": "[]", "tenant": "t"}
                plan = " | ".join(r[-1] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
                assert "USING COVERING INDEX jobs_claim_idx" in plan, plan
            # Another process holds the write lock, with an enqueue not yet committed.
            conn.execute("BEGIN IMMEDIATE")
            ops.enqueue(conn, [make_new_job("c", queue="q")])
            # More excluded names than a statement may have placeholders.
            excluded = {f"n{i}" for i in range(1500)} | {"b"}
            rows = await store.count_runnable(now=utcnow(), exclude_names=excluded)
            assert [(r.queue, r.name, r.count) for r in rows] == [("q", "a", 2)]
            rows = await store.count_runnable(now=utcnow(), tenant="t")
            assert [(r.queue, r.name, r.count) for r in rows] == [("q", "b", 2)]
            conn.execute("COMMIT")
        finally:
            conn.close()
        rows = await store.count_runnable(now=utcnow())
        assert [(r.name, r.count) for r in rows] == [("a", 2), ("b", 2), ("c", 1)]
    finally:
        await store.close()
