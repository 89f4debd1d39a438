"""store.sync(): the blocking producer on stdlib sqlite3, shared by threads."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from dispatch_core.errors import InvalidTransitionError, JobNotFoundError
from dispatch_core.models import Job
from dispatch_core.states import JobState
from dispatch_core.testing import make_new_job
from dispatch_plugins.sqlite import SQLiteStore


def _migrated(url: str) -> None:
    async def main() -> None:
        s = SQLiteStore(url)
        await s.open()
        await s.migrate()
        await s.close()

    asyncio.run(main())


def test_sync_needs_no_open_store_and_no_event_loop(db_url: str) -> None:
    _migrated(db_url)
    store = SQLiteStore(db_url)
    sync = store.sync()
    assert store.sync() is sync  # one producer per store
    try:
        (job,) = sync.enqueue([make_new_job(payload={"hello": "world"})])
        got = sync.get_job(job.id)
        assert got.payload == {"hello": "world"}
        assert got.state is JobState.PENDING
        assert sync.cancel(job.id).state is JobState.CANCELLED
        with pytest.raises(InvalidTransitionError):
            sync.cancel(job.id)
        with pytest.raises(JobNotFoundError):
            sync.get_job("job_01h455vb4pex5vsknk084sn02q")
        assert sync.enqueue([]) == []
    finally:
        sync.close()
        sync.close()  # idempotent
    (again,) = sync.enqueue([make_new_job()])  # a closed producer reconnects on use
    assert sync.get_job(again.id).id == again.id
    sync.close()


def test_sync_from_many_threads_at_once(db_url: str) -> None:
    _migrated(db_url)
    store = SQLiteStore(db_url)
    sync = store.sync()
    threads, per_thread = 8, 40
    barrier = threading.Barrier(threads)

    def produce(t: int) -> list[Job]:
        barrier.wait()
        made: list[Job] = []
        for i in range(per_thread):
            if i % 4 == 0:  # a bulk batch now and then, with a shared unique key
                made += sync.enqueue(
                    [make_new_job(payload={"t": t, "i": i}), make_new_job(unique_key=f"k{i}")]
                )
            else:
                made += sync.enqueue([make_new_job(payload={"t": t, "i": i})])
            if i % 10 == 5:
                cancelled = sync.cancel(made[-1].id)
                assert cancelled.state is JobState.CANCELLED
            assert sync.get_job(made[-1].id).id == made[-1].id
        return made

    try:
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(produce, range(threads)))
    finally:
        sync.close()

    unique_holders = {j.unique_key: j.id for made in results for j in made if j.unique_key}
    by_key: dict[str, set[str]] = {}
    for made in results:
        for j in made:
            if j.unique_key:
                by_key.setdefault(j.unique_key, set()).add(j.id)
    assert all(len(ids) == 1 for ids in by_key.values())  # every thread got the same holder
    plain = {j.id for made in results for j in made if not j.unique_key}
    assert len(plain) == threads * per_thread

    async def check() -> None:
        s = SQLiteStore(db_url)
        await s.open()
        try:
            counts = await s.count_jobs()
            assert sum(counts.values()) == len(plain) + len(unique_holders)
            assert counts[JobState.CANCELLED] == threads * (per_thread // 10)
        finally:
            await s.close()

    asyncio.run(check())


async def test_store_close_closes_the_sync_connection(store: SQLiteStore) -> None:
    sync = store.sync()
    await asyncio.to_thread(sync.enqueue, [make_new_job()])
    assert sync._conn is not None
    await store.close()
    assert sync._conn is None
