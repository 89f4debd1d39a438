"""Micro-benchmark of the SQLite store alone (no engine): run from the repository root with

    .venv/bin/python bench/sqlite_store_micro.py [--jobs 20000] [--batch 10]

It measures bulk enqueue (rows/s), single-job enqueue (jobs/s), the worker's hot path as
claim(batch) + finish(batch COMPLETED) cycles (cycles/s and jobs/s), the same with several
stores on one file in one process, and the CPU an idle listen() watcher costs. The store is
measured alone: the engine's benchmark is ``python -m bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

from dispatch_core.models import Outcome, OutcomeKind, utcnow
from dispatch_core.testing import make_new_job
from dispatch_plugins.sqlite import SQLiteStore


async def fresh_store(directory: str, name: str) -> SQLiteStore:
    store = SQLiteStore(f"sqlite:///{os.path.join(directory, name)}")
    await store.open()
    await store.migrate()
    return store


async def bench_enqueue(directory: str, jobs: int) -> None:
    store = await fresh_store(directory, "enqueue.db")
    news = [make_new_job("bench.noop", payload={"i": i}) for i in range(jobs)]
    t0 = time.perf_counter()
    await store.enqueue(news)
    bulk = time.perf_counter() - t0
    print(f"bulk enqueue, one call of {jobs:,}: {jobs / bulk:,.0f} rows/s ({bulk * 1000:.0f} ms)")

    news = [make_new_job("bench.noop", payload={"i": i}) for i in range(jobs)]
    t0 = time.perf_counter()
    for start in range(0, jobs, 1000):
        await store.enqueue(news[start : start + 1000])
    chunked = time.perf_counter() - t0
    print(f"bulk enqueue, batches of 1,000: {jobs / chunked:,.0f} rows/s")

    n = 2000
    news = [make_new_job("bench.noop", payload={"i": i}) for i in range(n)]
    t0 = time.perf_counter()
    for new in news:
        await store.enqueue([new])
    single = time.perf_counter() - t0
    print(f"enqueue one job per call: {n / single:,.0f} jobs/s ({single / n * 1e6:.0f} us/call)")
    sync = store.sync()
    news = [make_new_job("bench.noop", payload={"i": i}) for i in range(n)]
    t0 = time.perf_counter()
    for new in news:
        sync.enqueue([new])
    single = time.perf_counter() - t0
    print(f"sync().enqueue one job per call: {n / single:,.0f} jobs/s")
    await store.close()


async def drain(store: SQLiteStore, batch: int, worker_id: str) -> tuple[int, int]:
    cycles = done = 0
    while True:
        claimed = await store.claim(
            worker_id=worker_id,
            queues=["default"],
            names=["bench.noop"],
            limit=batch,
            lease_seconds=30,
            now=utcnow(),
        )
        if not claimed:
            return cycles, done
        outcomes = [
            Outcome(job_id=j.id, attempt_token=j.attempt_token or "", kind=OutcomeKind.COMPLETED)
            for j in claimed
        ]
        written = await store.finish(outcomes, now=utcnow())
        assert all(written)
        cycles += 1
        done += len(claimed)


async def bench_hot_path(directory: str, jobs: int, batch: int, stores: int) -> None:
    store = await fresh_store(directory, f"hot-{stores}.db")
    await store.enqueue([make_new_job("bench.noop", queue="default") for _ in range(jobs)])
    workers = [store]
    for _ in range(stores - 1):
        other = SQLiteStore(store.url)
        await other.open()
        workers.append(other)
    t0 = time.perf_counter()
    results = await asyncio.gather(*(drain(s, batch, f"wkr_{i}") for i, s in enumerate(workers)))
    elapsed = time.perf_counter() - t0
    cycles = sum(c for c, _ in results)
    done = sum(d for _, d in results)
    assert done == jobs, (done, jobs)
    print(
        f"claim({batch}) + finish({batch} COMPLETED), {stores} store(s): "
        f"{cycles / elapsed:,.0f} cycles/s, {done / elapsed:,.0f} jobs/s"
    )
    for s in workers:
        await s.close()


async def bench_idle_watcher(directory: str, seconds: float) -> None:
    async def cpu_share(duration: float) -> float:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(duration)
        return (time.process_time() - cpu0) / (time.perf_counter() - wall0)

    base = await cpu_share(seconds)
    for query, label in (
        ("?idle_poll_interval=0.001", "constant 1 ms polling"),
        ("", "default: 1 ms, backing off to 20 ms after a quiet second"),
    ):
        store = SQLiteStore(f"sqlite:///{os.path.join(directory, 'watch.db')}{query}")
        await store.open()
        await store.migrate()
        stop = await store.listen(lambda: None)
        await asyncio.sleep(1.5)  # past the busy second
        cpu = await cpu_share(seconds)
        await stop()
        await store.close()
        print(
            f"idle listen() watcher, {label}: {(cpu - base) * 100:.1f}% of one CPU "
            f"(the idle loop alone: {base * 100:.2f}%)"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        await bench_enqueue(directory, args.jobs)
        await bench_hot_path(directory, args.jobs, args.batch, stores=1)
        await bench_hot_path(directory, args.jobs, args.batch, stores=4)
        await bench_idle_watcher(directory, args.idle_seconds)


if __name__ == "__main__":
    asyncio.run(main())
