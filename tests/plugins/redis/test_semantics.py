"""Redis-specific behaviour: the keyspace, the scripts' cache, odd clocks and stale entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis

from dispatch_core.errors import StoreUnavailableError
from dispatch_core.models import Job, JobFilter, utcnow
from dispatch_core.states import JobState
from dispatch_core.testing import make_new_job
from dispatch_plugins.redis import RedisStore

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
        assert await store.migrate() == ["0001_keyspace"]
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
