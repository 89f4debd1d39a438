"""Redis-specific behaviour: the keyspace, the scripts' cache, odd clocks and stale entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
import redis

from dispatch_core._ids import new_id
from dispatch_core.cluster import WorkerInfo
from dispatch_core.errors import StoreUnavailableError
from dispatch_core.models import Job, JobFilter, Outcome, OutcomeKind, RunnableCount, utcnow
from dispatch_core.states import JobState
from dispatch_core.testing import make_new_job
from dispatch_plugins.redis import RedisStore, codec as c

from .conftest import REDIS_URL, delete_prefix, with_params


async def _claim(
    store: RedisStore, now: datetime | None = None, names: set[str] | None = None
) -> list[Job]:
    return await store.claim(
        worker_id="wkr_t",
        queues=None,
        names=names,
        limit=10,
        lease_seconds=30,
        now=now or utcnow(),
    )


async def test_every_key_is_under_the_prefix(store: RedisStore, prefix: str) -> None:
    (job,) = await store.enqueue([make_new_job(queue="q", tenant="t", unique_key="k")])
    (claimed,) = await _claim(store)
    assert claimed.id == job.id
    await store.pause_queue("q2", paused=True)
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        mine = set(client.scan_iter(match=f"{prefix}:*"))
        assert f"{prefix}:job:{job.id}" in mine
        assert all(k.startswith(f"{prefix}:") for k in mine)
    finally:
        client.close()


async def test_two_prefixes_share_a_server_without_seeing_each_other(
    store: RedisStore, redis_base: str
) -> None:
    other_prefix = f"{store.prefix}-other"
    other = RedisStore(with_params(redis_base, prefix=other_prefix))
    await other.open()
    try:
        await store.enqueue([make_new_job()])
        assert await other.list_jobs(JobFilter()) == []
        assert await _claim(other) == []
        assert len(await _claim(store)) == 1
    finally:
        await other.close()
        delete_prefix(other_prefix)


async def test_migrate_stamps_the_version_once(redis_url: str, prefix: str) -> None:
    store = RedisStore(redis_url)
    await store.open()
    try:
        assert await store.migrate() == ["0001_keyspace", "0002_disjoint_indexes"]
        assert await store.migrate() == []
        client = redis.Redis.from_url(REDIS_URL)
        try:
            client.set(f"{prefix}:schema", "99")
        finally:
            client.close()
        with pytest.raises(StoreUnavailableError, match="newer"):
            await store.migrate()
    finally:
        await store.close()


async def test_scripts_are_loaded_again_after_a_script_flush(store: RedisStore) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.script_flush()
    finally:
        client.close()
    (job,) = await store.enqueue([make_new_job()])
    assert (await store.get_job(job.id)).state is JobState.PENDING


async def test_claims_merge_queues_in_priority_order(store: RedisStore) -> None:
    now = utcnow()
    jobs = await store.enqueue(
        [
            make_new_job(queue="a", priority=1, run_at=now - timedelta(seconds=3)),
            make_new_job(queue="b", priority=5, run_at=now - timedelta(seconds=1)),
            make_new_job(queue="c", priority=1, run_at=now - timedelta(seconds=9)),
            make_new_job(queue="b", priority=-2, run_at=now - timedelta(seconds=60)),
        ]
    )
    claimed = await _claim(store, now=now)
    assert [j.id for j in claimed] == [jobs[i].id for i in (1, 2, 0, 3)]


async def test_a_claim_with_a_clock_behind_leaves_the_job_for_later(store: RedisStore) -> None:
    now = utcnow()
    (job,) = await store.enqueue([make_new_job(run_at=now)])
    assert await _claim(store, now=now - timedelta(seconds=30)) == []
    assert await store.next_run_at(queues=None, names=None) is not None
    (claimed,) = await _claim(store, now=now + timedelta(seconds=1))
    assert claimed.id == job.id


async def test_far_future_times_round_trip(store: RedisStore) -> None:
    far = datetime(2200, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    (job,) = await store.enqueue([make_new_job(run_at=far)])
    got = await store.get_job(job.id)
    assert got.run_at == far
    assert await store.next_run_at(queues=None, names=None) == far
    (claimed,) = await _claim(store, now=far)
    assert claimed.id == job.id


async def test_a_stale_ready_entry_is_skipped_and_dropped(store: RedisStore, prefix: str) -> None:
    a, b = await store.enqueue([make_new_job(priority=9), make_new_job()])
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.delete(f"{prefix}:job:{a.id}")  # an operator deleted the hash by hand
        (claimed,) = await _claim(store)
        assert claimed.id == b.id
        assert client.zcard(f"{prefix}:ready:default") == 0
    finally:
        client.close()


async def test_names_filter_leaves_other_jobs_in_place(store: RedisStore) -> None:
    await store.enqueue([make_new_job("x", priority=5) for _ in range(3)] + [make_new_job("y")])
    (y,) = await _claim(store, names={"y"})
    assert y.name == "y"
    assert len(await _claim(store, names={"x"})) == 3


async def test_a_cancelled_call_is_never_swallowed(store: RedisStore) -> None:
    """redis.asyncio can lose a cancel that lands while a command waits for its reply; the
    store raises it, so that a worker's background tasks always stop."""
    import asyncio

    async def busy() -> None:
        while True:
            await store.acquire_leadership(worker_id="w", ttl=5, now=utcnow())
            await store.get_leader(now=utcnow())
            await asyncio.sleep(10)

    for i in range(100):
        task = asyncio.create_task(busy())
        await asyncio.sleep(0.0001 * (i % 20))
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2)
        assert done, f"round {i}: the cancellation was lost"
        assert task.cancelled()


async def test_a_worker_stopped_before_it_started_stops(redis_url: str) -> None:
    import asyncio

    from dispatch_core import Engine

    engine = Engine(redis_url)

    @engine.job(name="noop")
    async def noop() -> None:
        return None

    try:
        for _ in range(5):
            worker = engine.worker(concurrency=2, poll_interval=0.2)
            running = asyncio.create_task(worker.run())
            worker.stop()
            await asyncio.wait_for(running, 10)
    finally:
        await engine.aclose()


async def test_worker_names_round_trip_and_rows_of_older_versions_have_none(
    store: RedisStore, prefix: str
) -> None:
    now = utcnow()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        # A worker hash as an older dispatch-redis wrote it: no names field.
        client.hset(
            f"{prefix}:worker:wkr_old",
            mapping={
                "id": "wkr_old",
                "hostname": "h",
                "pid": "1",
                "concurrency": "4",
                "version": "0.1",
                "started_at": c.us(now),
                "last_seen": c.us(now),
                "state": "running",
            },
        )
        client.zadd(f"{prefix}:workers", {"wkr_old": int(c.us(now))})
    finally:
        client.close()
    assert [(w.id, w.names) for w in await store.list_workers()] == [("wkr_old", None)]
    new = WorkerInfo(
        id=new_id("wkr"),
        hostname="h",
        pid=2,
        queues=None,
        concurrency=1,
        version="0.2",
        started_at=now,
        last_seen=now,
        names=(),
    )
    for names, write in (((), "register"), (("a", "é.x"), "heartbeat"), (None, "heartbeat")):
        worker = attrs.evolve(new, names=names)
        if write == "register":
            await store.register_worker(worker)
        else:
            await store.heartbeat(
                worker_id=new.id, leases={}, lease_seconds=30, now=now, worker=worker
            )
        got = {w.id: w.names for w in await store.list_workers()}
        assert got == {"wkr_old": None, new.id: names}, write


def _table(rows: list[RunnableCount]) -> list[tuple[str, str, int]]:
    return [(r.queue, r.name, r.count) for r in rows]


async def test_count_runnable_goes_in_bounded_steps(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = utcnow()
    await store.enqueue(
        [make_new_job(f"n{i % 3}", queue=f"q{i % 2}", tenant="t") for i in range(10)]
        + [make_new_job("late", run_at=now + timedelta(hours=1))]
        # a tenant whose index is larger than the due jobs' but holds few of them
        + [make_new_job("big", tenant="big") for _ in range(25)]
    )
    for _ in range(2):
        done = await _claim(store, names={"big"})
        assert len(done) == 10
        outcomes = [
            Outcome(job_id=j.id, attempt_token=j.attempt_token or "", kind=OutcomeKind.COMPLETED)
            for j in done
        ]
        assert await store.finish(outcomes, now=utcnow()) == [True] * 10
    at = utcnow() + timedelta(seconds=1)
    by_queue = [
        ("q0", "n0", 2),
        ("q0", "n1", 1),
        ("q0", "n2", 2),
        ("q1", "n0", 2),
        ("q1", "n1", 2),
        ("q1", "n2", 1),
    ]
    assert _table(await store.count_runnable(now=at)) == [("default", "big", 5), *by_queue]

    steps: list[tuple[str, str]] = []
    call = store._call
    cut_in = [True]

    async def counted(name: str, *args: Any) -> Any:
        result = await call(name, *args)
        if name == "count_runnable":
            steps.append((args[0], args[1]))
            if cut_in and steps == [("ready", "ready:default")]:
                cut_in.clear()
                # Claims take the three jobs just counted (the cursor's own among them): the
                # next step still starts right after them.
                claimed = await store.claim(
                    worker_id="w",
                    queues=["default"],
                    names=None,
                    limit=3,
                    lease_seconds=30,
                    now=at,
                )
                assert [j.name for j in claimed] == ["big"] * 3
        return result

    monkeypatch.setattr(store, "_call", counted)
    monkeypatch.setattr("dispatch_plugins.redis.ops.common.COUNT_RUNNABLE_CHUNK", 3)
    rows = await store.count_runnable(now=at)
    assert _table(rows) == [("default", "big", 5), *by_queue]
    # five ready jobs a queue, in steps of three; the not yet due one ends the delayed walk
    per_queue = ["ready"] * 2 + ["delayed"]
    assert steps == [(k, f"{k}:{q}") for q in ("default", "q0", "q1") for k in per_queue]
    steps.clear()
    rows = await store.count_runnable(now=at, tenant="big")
    assert _table(rows) == [("default", "big", 2)]  # three of its jobs run now
    # the tenant's index (25 ids) is larger than the 12 due jobs: the queues are walked
    assert [k for k, _ in steps] == ["ready", "delayed"] + ["ready", "ready", "delayed"] * 2
    steps.clear()
    rows = await store.count_runnable(now=now + timedelta(hours=2), tenant="t")
    assert _table(rows) == by_queue
    assert steps == [("index", "jobs:t:t")] * 4  # its 10 jobs, smaller than the 13 due ones


async def test_count_runnable_looks_at_a_bounded_number_of_jobs_a_queue(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = utcnow()
    await store.enqueue(
        [make_new_job("head", queue="a", priority=1)]
        + [make_new_job("bulk", queue="a") for _ in range(6)]
        + [make_new_job("tail", queue="a", priority=-1)]
        + [make_new_job("later", queue="a", run_at=now + timedelta(seconds=1))]
        + [make_new_job("x", queue="b") for _ in range(2)]
    )
    at = now + timedelta(seconds=2)
    monkeypatch.setattr("dispatch_plugins.redis.ops.common.COUNT_RUNNABLE_CHUNK", 3)
    monkeypatch.setattr("dispatch_plugins.redis.ops.common.COUNT_RUNNABLE_LIMIT", 5)
    # Queue a: the five jobs a claim would take first; queue b has a bound of its own.
    assert _table(await store.count_runnable(now=at)) == [
        ("a", "bulk", 4),
        ("a", "head", 1),
        ("b", "x", 2),
    ]
    monkeypatch.setattr("dispatch_plugins.redis.ops.common.COUNT_RUNNABLE_LIMIT", 9)
    assert _table(await store.count_runnable(now=at)) == [
        ("a", "bulk", 6),
        ("a", "head", 1),
        ("a", "later", 1),  # due by now, still in the delayed set: looked at last
        ("a", "tail", 1),
        ("b", "x", 2),
    ]
