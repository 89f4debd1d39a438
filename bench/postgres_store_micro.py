"""Micro-benchmark of the PostgreSQL store alone (no engine): run from the repository root with

    .venv/bin/python bench/postgres_store_micro.py [--dsn postgresql://...] [--jobs 20000]

It measures bulk enqueue (rows/s: one call of ``--jobs`` rows, which goes through binary COPY,
and batches of 100 and 1,000), single-job enqueue (jobs/s, async and sync), and the worker's
hot path as claim(batch) + finish(batch COMPLETED) cycles (cycles/s and jobs/s) with one and
with several stores in one process. Each measurement runs in a fresh schema, dropped after.
The DSN defaults to ``DISPATCH_TEST_POSTGRES_DSN`` or the local test server.

``--per-call`` measures only the cost of each hot call (claim of ``--batch``, finish of as many,
heartbeat of as many leases, one-job enqueue async and sync): microseconds of wall time and of
this process's CPU time (``time.process_time``, every thread) per call, the median of blocks of
calls. On a busy machine wall time says little; CPU time is steadier, but it still rises with
the load (shared caches and cores). To compare two versions of the store, run them in turns
(A, B, A, B...); for exact figures count instructions, e.g. ``valgrind --tool=cachegrind
--cache-sim=no`` over two runs of different ``--calls``, and divide the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable

import psycopg

from dispatch_core.models import Job, Outcome, OutcomeKind, utcnow
from dispatch_core.testing import make_new_job
from dispatch_plugins.postgres import PostgresStore

DEFAULT_DSN = os.environ.get(
    "DISPATCH_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


class Schemas:
    """Fresh schemas on one server, dropped at the end."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.made: list[str] = []

    def url(self) -> str:
        schema = f"dispatch_bench_{secrets.token_hex(4)}"
        self.made.append(schema)
        return f"{self.dsn}{'&' if '?' in self.dsn else '?'}schema={schema}"

    async def store(self) -> PostgresStore:
        store = PostgresStore(self.url())
        await store.open()
        await store.migrate()
        return store

    def drop(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for schema in self.made:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def bench_enqueue(schemas: Schemas, jobs: int) -> None:
    store = await schemas.store()
    news = [make_new_job("bench.noop", payload={"i": i}) for i in range(jobs)]
    t0 = time.perf_counter()
    await store.enqueue(news)
    bulk = time.perf_counter() - t0
    print(f"bulk enqueue, one call of {jobs:,}: {jobs / bulk:,.0f} rows/s ({bulk * 1000:.0f} ms)")
    for size in (1000, 100):
        news = [make_new_job("bench.noop", payload={"i": i}) for i in range(jobs)]
        t0 = time.perf_counter()
        for start in range(0, jobs, size):
            await store.enqueue(news[start : start + size])
        chunked = time.perf_counter() - t0
        print(f"bulk enqueue, batches of {size:,}: {jobs / chunked:,.0f} rows/s")
    news = [
        make_new_job("bench.noop", payload={"i": i}, unique_key=f"k{i}") for i in range(jobs // 4)
    ]
    t0 = time.perf_counter()
    await store.enqueue(news)
    keyed = time.perf_counter() - t0
    print(
        f"bulk enqueue with unique keys, one call of {len(news):,}: {len(news) / keyed:,.0f} rows/s"
    )

    n = 2000
    news = [make_new_job("bench.noop", payload={"i": i}) for i in range(n)]
    t0 = time.perf_counter()
    for new in news:
        await store.enqueue([new])
    single = time.perf_counter() - t0
    print(f"enqueue one job per call: {n / single:,.0f} jobs/s ({single / n * 1e6:.0f} us/call)")

    sync = store.sync()
    news = [make_new_job("bench.noop", payload={"i": i}) for i in range(n)]

    def produce() -> float:
        t0 = time.perf_counter()
        for new in news:
            sync.enqueue([new])
        return time.perf_counter() - t0

    single = await asyncio.to_thread(produce)
    print(f"sync().enqueue one job per call: {n / single:,.0f} jobs/s ({single / n * 1e6:.0f} us)")

    async def producer(k: int, count: int) -> None:
        for i in range(count):
            await store.enqueue([make_new_job("bench.noop", payload={"p": k, "i": i})])

    t0 = time.perf_counter()
    await asyncio.gather(*(producer(k, n // 8) for k in range(8)))
    concurrent = time.perf_counter() - t0
    print(f"enqueue one job per call, 8 concurrent producers: {n / concurrent:,.0f} jobs/s")
    await store.close()


async def drain(store: PostgresStore, batch: int, worker_id: str) -> tuple[int, int]:
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


async def bench_hot_path(schemas: Schemas, jobs: int, batch: int, stores: int) -> None:
    store = await schemas.store()
    await store.enqueue([make_new_job("bench.noop", queue="default") for _ in range(jobs)])
    workers = [store]
    for _ in range(stores - 1):
        other = PostgresStore(store.url)
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


class PerCall:
    """Wall and CPU time per call of one operation, summed by blocks of calls."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._calls = 0

    async def time(self, call: Callable[[], Awaitable[object]]) -> None:
        """Run and time one call, into the current block."""
        w0, c0 = time.perf_counter(), time.process_time()
        await call()
        c1, w1 = time.process_time(), time.perf_counter()
        if not self._calls:
            self.wall.append(0.0)
            self.cpu.append(0.0)
        self.wall[-1] += w1 - w0
        self.cpu[-1] += c1 - c0
        self._calls += 1

    def end_block(self) -> None:
        self.wall[-1] /= self._calls
        self.cpu[-1] /= self._calls
        self._calls = 0

    def print(self) -> None:
        wall, cpu = statistics.median(self.wall), statistics.median(self.cpu)
        print(f"{self.label:<28} {wall * 1e6:7.0f} us wall {cpu * 1e6:7.0f} us CPU")


async def bench_per_call(schemas: Schemas, calls: int, batch: int, blocks: int = 10) -> None:
    store = await schemas.store()
    per_block = max(1, calls // blocks)
    jobs = (per_block * blocks + 10) * batch
    await store.enqueue([make_new_job("bench.noop") for _ in range(jobs)])
    sync = store.sync()
    claimed: list[Job] = []

    async def claim() -> None:
        claimed[:] = await store.claim(
            worker_id="w",
            queues=["default"],
            names=["bench.noop"],
            limit=batch,
            lease_seconds=30,
            now=utcnow(),
        )
        assert len(claimed) == batch, "ran out of jobs"

    async def finish() -> None:
        outcomes = [
            Outcome(job_id=j.id, attempt_token=j.attempt_token or "", kind=OutcomeKind.COMPLETED)
            for j in claimed
        ]
        await store.finish(outcomes, now=utcnow())

    await claim()
    leases = {j.id: j.attempt_token or "" for j in claimed}  # held all along

    async def heartbeat() -> None:
        await store.heartbeat(worker_id="w", leases=leases, lease_seconds=30, now=utcnow())

    async def aenqueue() -> None:
        await store.enqueue([make_new_job("bench.noop", queue="other")])

    async def sync_enqueue() -> None:
        # In the event loop's thread on purpose: the blocking call alone, no thread hop.
        sync.enqueue([make_new_job("bench.noop", queue="other")])

    for _ in range(6):  # warm up: the pools, psycopg's prepared statements (after 5 uses)
        for call in (claim, finish, heartbeat, aenqueue, sync_enqueue):
            await call()
    claims, finishes = PerCall(f"claim({batch})"), PerCall(f"finish({batch})")
    others = [
        (PerCall(f"heartbeat({batch} leases)"), heartbeat),
        (PerCall("enqueue one job, async"), aenqueue),
        (PerCall("sync().enqueue one job"), sync_enqueue),
    ]
    for _ in range(blocks):
        for _ in range(per_block):
            await claims.time(claim)
            await finishes.time(finish)
        claims.end_block()
        finishes.end_block()
        for measure, call in others:
            for _ in range(per_block):
                await measure.time(call)
            measure.end_block()
    print(f"per call, the median of {blocks} blocks of {per_block} calls:")
    for measure in [claims, finishes, *(m for m, _ in others)]:
        measure.print()
    await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument(
        "--per-call", action="store_true", help="only the cost of each hot call (see above)"
    )
    parser.add_argument("--calls", type=int, default=2_000, help="calls of each, --per-call")
    args = parser.parse_args()
    schemas = Schemas(args.dsn)
    try:
        if args.per_call:
            await bench_per_call(schemas, args.calls, args.batch)
            return
        await bench_enqueue(schemas, args.jobs)
        await bench_hot_path(schemas, args.jobs, args.batch, stores=1)
        await bench_hot_path(schemas, args.jobs, args.batch, stores=4)
    finally:
        schemas.drop()


if __name__ == "__main__":
    asyncio.run(main())
