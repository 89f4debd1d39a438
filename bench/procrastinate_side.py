"""Procrastinate measurements, on the same PostgreSQL server as Dispatch's PostgreSQL store.

Procrastinate runs in a fresh database (``bench_procrastinate_<random>``, dropped at the end)
with its schema applied by ``app.schema_manager.apply_schema()``; its tables are truncated
between measurements, so each starts on an empty queue.

Also the entry point of the worker child process used for the pickup latency::

    python -m bench.procrastinate_side worker --dsn postgresql://.../bench_procrastinate_x \
        --expect 200 --out result.json --ready ready.flag
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import psycopg
from procrastinate.worker import Worker
from psycopg import sql

from bench.common import (
    BenchError,
    Metric,
    Sizes,
    best_of,
    child_process,
    finish_child,
    latency_metric,
    rate_metric,
    wait_for_path,
)
from bench.latency import Recorder, produce
from bench.procrastinate_app import TABLES, ProcrastinateTasks, make_app
from bench.services import check_postgres, fresh_database

__all__ = ["run_procrastinate"]

NOTE = "hello"


def _truncate(dsn: str) -> None:
    """Empty the queue (and the events, workers... tables) for the next measurement."""
    tables = sql.SQL(", ").join(sql.Identifier(t) for t in TABLES)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(tables))


def _count_succeeded(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        ).fetchone()
    return int(row[0]) if row else 0


def _payloads(n: int) -> list[dict[str, Any]]:
    return [{"user_id": i, "note": NOTE} for i in range(n)]


# -- enqueue ---------------------------------------------------------------------------------------


def _enqueue_single_once(
    tasks: ProcrastinateTasks, dsn: str, sizes: Sizes
) -> tuple[Metric, Metric]:
    """``task.defer`` (sync connector) then ``task.defer_async`` (async pool), one at a time."""
    _truncate(dsn)
    noop = tasks.noop
    with tasks.app.open():
        for i in range(sizes.warmup):
            noop.defer(user_id=i, note=NOTE)
        t0 = time.perf_counter()
        for i in range(sizes.single):
            noop.defer(user_id=i, note=NOTE)
        sync = rate_metric(sizes.single, time.perf_counter() - t0)

    async def single_async() -> Metric:
        async with tasks.app.open_async():
            for i in range(sizes.warmup):
                await noop.defer_async(user_id=i, note=NOTE)
            t0 = time.perf_counter()
            for i in range(sizes.single):
                await noop.defer_async(user_id=i, note=NOTE)
            return rate_metric(sizes.single, time.perf_counter() - t0)

    _truncate(dsn)
    return sync, asyncio.run(single_async())


# -- bulk and drain --------------------------------------------------------------------------------


def _bulk_and_drain_once(
    tasks: ProcrastinateTasks, dsn: str, sizes: Sizes
) -> tuple[Metric, Metric]:
    """Fill an empty queue with ``batch_defer`` (timed), then drain it in this process."""
    if sizes.drain < sizes.bulk:
        raise BenchError("sizes.drain must be >= sizes.bulk")
    _truncate(dsn)
    payloads = _payloads(sizes.bulk)
    with tasks.app.open():
        t0 = time.perf_counter()
        tasks.noop.batch_defer(*payloads)
        bulk = rate_metric(sizes.bulk, time.perf_counter() - t0, note="task.batch_defer, one call")
        if sizes.drain > sizes.bulk:
            tasks.noop.batch_defer(*_payloads(sizes.drain - sizes.bulk))

    async def drain() -> float:
        async with tasks.app.open_async():
            t0 = time.perf_counter()
            await asyncio.wait_for(
                tasks.app.run_worker_async(
                    concurrency=sizes.concurrency, wait=False, install_signal_handlers=False
                ),
                timeout=sizes.child_deadline,
            )
            return time.perf_counter() - t0

    seconds = asyncio.run(drain())
    done = _count_succeeded(dsn)
    if done != sizes.drain:
        raise BenchError(f"procrastinate worker completed {done} jobs, expected {sizes.drain}")
    return bulk, rate_metric(
        sizes.drain,
        seconds,
        concurrency=sizes.concurrency,
        note="app.run_worker_async(concurrency, wait=False) in this process",
    )


# -- pickup latency --------------------------------------------------------------------------------


def _latency(tasks: ProcrastinateTasks, dsn: str, sizes: Sizes, workdir: Path) -> Metric:
    """A worker in another process (LISTEN/NOTIFY); this process defers (sync)."""
    _truncate(dsn)
    out, ready = workdir / "procrastinate_latency.json", workdir / "procrastinate_ready"
    log = workdir / "procrastinate_worker.log"
    args = [
        "worker",
        "--dsn",
        dsn,
        "--expect",
        str(sizes.latency),
        "--out",
        str(out),
        "--ready",
        str(ready),
        "--concurrency",
        str(sizes.concurrency),
        "--deadline",
        str(sizes.child_deadline),
    ]
    stamp = tasks.stamp
    with tasks.app.open(), child_process("bench.procrastinate_side", args, log) as proc:
        produce(
            lambda ns, warm: stamp.defer(enqueued_ns=ns, warmup=warm),
            count=sizes.latency,
            gap=sizes.latency_gap,
            wait_ready=lambda: wait_for_path(ready, timeout=60, proc=proc, log_path=log),
        )
        finish_child(proc, timeout=30, log_path=log)
    samples: list[int] = json.loads(out.read_text())["samples_ns"]
    if len(samples) != sizes.latency:
        raise BenchError(f"got {len(samples)} latency samples, expected {sizes.latency}")
    return latency_metric(
        samples,
        worker="another process (procrastinate Worker, LISTEN/NOTIFY), producer: sync defer",
    )


# -- the whole system ------------------------------------------------------------------------------


def run_procrastinate(sizes: Sizes, workdir: Path) -> dict[str, Metric]:
    """Every measurement for Procrastinate, in a database created for the run."""
    check_postgres()
    with fresh_database("bench_procrastinate") as dsn:
        tasks = make_app(dsn)
        # The app is opened around each phase: closing the async pool also closes the sync one.
        with tasks.app.open():
            tasks.app.schema_manager.apply_schema()
        results: dict[str, Metric] = {}
        singles = [_enqueue_single_once(tasks, dsn, sizes) for _ in range(sizes.peer_repeats)]
        results["enqueue_single_sync"] = best_of([s for s, _ in singles])
        results["enqueue_single_async"] = best_of([a for _, a in singles])
        runs = [_bulk_and_drain_once(tasks, dsn, sizes) for _ in range(sizes.peer_repeats)]
        results["enqueue_bulk"] = best_of([b for b, _ in runs])
        results["drain"] = best_of([d for _, d in runs])
        results["pickup_latency"] = _latency(tasks, dsn, sizes, workdir)
        return results


# -- the worker child process ----------------------------------------------------------------------


def _worker_main(args: argparse.Namespace) -> int:
    recorder = Recorder(expect=args.expect, ready_path=Path(args.ready))
    tasks = make_app(args.dsn, recorder)

    async def main() -> None:
        async with tasks.app.open_async():
            worker = Worker(app=tasks.app, concurrency=args.concurrency)
            recorder.on_done = worker.stop
            # Never outlive a parent that forgot us.
            asyncio.get_running_loop().call_later(args.deadline, worker.stop)
            await worker.run()  # type: ignore[no-untyped-call]

    asyncio.run(main())
    recorder.dump(Path(args.out))
    if len(recorder.samples_ns) != args.expect:
        print(f"worker stopped with {len(recorder.samples_ns)}/{args.expect} samples", flush=True)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.procrastinate_side")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run an idle worker that records pickup latencies")
    worker.add_argument("--dsn", required=True)
    worker.add_argument("--expect", type=int, required=True)
    worker.add_argument("--out", required=True)
    worker.add_argument("--ready", required=True)
    worker.add_argument("--concurrency", type=int, default=10)
    worker.add_argument("--deadline", type=float, default=120.0)
    return _worker_main(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
