"""Celery measurements: Redis broker, result backend off, worker in a child process.

Two variants differ only in the worker's pool (the producer side is the same code):

* ``celery``: ``--pool=threads --concurrency=10``, the fair match for no-op tasks on a
  2-core machine (one process, like Dispatch's worker and Huey's thread consumer);
* ``celery-prefork``: ``--pool=prefork --concurrency=10``, Celery's default pool: ten
  forked processes (opt-in, ``--only celery-prefork``: it costs another minute).

The Redis database (``BENCH_REDIS_URL``, not 0) is flushed before and after every
measurement. The worker runs ``python -m celery -A bench.celery_app worker`` with
``--without-mingle`` (no start-up wait for replies from other workers) and Celery's defaults
otherwise (prefetch multiplier 4, early acknowledgement).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from celery import group  # type: ignore[import-untyped]

from bench import celery_app
from bench.common import (
    BenchError,
    Metric,
    Sizes,
    best_of,
    child_process,
    latency_metric,
    rate_metric,
    wait_until,
)
from bench.latency import produce
from bench.services import REDIS_URL, flushed_redis_db, token

__all__ = ["POOLS", "run_celery"]

#: Benchmark system name -> worker pool.
POOLS = {"celery": "threads", "celery-prefork": "prefork"}

NOTE = "hello"


@contextlib.contextmanager
def _worker(
    url: str, pool: str, sizes: Sizes, log: Path, *, expect: int = 0
) -> Iterator[subprocess.Popen[bytes]]:
    """A Celery worker child process (reaped on exit)."""
    args = [
        "-A",
        "bench.celery_app",
        "worker",
        f"--pool={pool}",
        f"--concurrency={sizes.concurrency}",
        "--loglevel=WARNING",
        "--without-mingle",
        f"--hostname=bench-{token()}@%h",
    ]
    env = {
        celery_app.BROKER_ENV: url,
        celery_app.EXPECT_ENV: str(expect),
        celery_app.DEADLINE_ENV: str(sizes.child_deadline),
    }
    with child_process("celery", args, log, env_extra=env) as proc:
        yield proc


def _payloads(n: int) -> list[dict[str, Any]]:
    return [{"user_id": i, "note": NOTE} for i in range(n)]


def _enqueue_single_once(r: redis.Redis, sizes: Sizes) -> Metric:
    """``sizes.single`` calls of ``noop.delay(payload)`` (no worker running)."""
    r.flushdb()
    delay = celery_app.noop.delay
    for p in _payloads(sizes.warmup):
        delay(p)
    payloads = _payloads(sizes.single)
    t0 = time.perf_counter()
    for p in payloads:
        delay(p)
    return rate_metric(sizes.single, time.perf_counter() - t0)


def _bulk_and_drain_once(
    r: redis.Redis, url: str, pool: str, sizes: Sizes, workdir: Path, name: str
) -> tuple[Metric, Metric]:
    """Fill an empty queue with ``group(...).apply_async()`` (timed), then start a worker and
    time it from ``worker_ready`` to the last completion."""
    if sizes.drain < sizes.bulk:
        raise BenchError("sizes.drain must be >= sizes.bulk")
    r.flushdb()
    sig = celery_app.noop.s
    payloads = _payloads(sizes.bulk)
    t0 = time.perf_counter()
    group(sig(p) for p in payloads).apply_async()
    bulk = rate_metric(
        sizes.bulk,
        time.perf_counter() - t0,
        note="no bulk API: group(...).apply_async() publishes one message per task",
    )
    if sizes.drain > sizes.bulk:
        group(sig(p) for p in _payloads(sizes.drain - sizes.bulk)).apply_async()

    log = workdir / f"{name}.log"
    spawned_ns = time.time_ns()
    with _worker(url, pool, sizes, log, expect=sizes.drain) as proc:
        wait_until(
            lambda: r.exists(celery_app.DONE_KEY) == 1,
            timeout=sizes.child_deadline,
            what=f"{sizes.drain} celery tasks",
            proc=proc,
            log_path=log,
            interval=0.01,
        )
    ready_ns, done_ns, count = (
        int(v or 0) for v in r.mget(celery_app.READY_KEY, celery_app.DONE_KEY, celery_app.COUNT_KEY)
    )
    if count != sizes.drain:
        raise BenchError(f"celery worker ran {count} tasks, expected {sizes.drain}")
    drain = rate_metric(
        sizes.drain,
        (done_ns - ready_ns) / 1e9,
        concurrency=sizes.concurrency,
        startup_s=round((ready_ns - spawned_ns) / 1e9, 3),
        note=f"worker process, {pool} pool; timed from worker_ready to the last completion",
    )
    return bulk, drain


def _latency(r: redis.Redis, url: str, pool: str, sizes: Sizes, workdir: Path) -> Metric:
    """An idle worker in another process; this process sends ``stamp.delay(now_ns, warmup)``."""
    r.flushdb()
    log = workdir / "celery_latency.log"
    stamp = celery_app.stamp.delay
    with _worker(url, pool, sizes, log) as proc:
        produce(
            lambda ns, warm: stamp(ns, warm),
            count=sizes.latency,
            gap=sizes.latency_gap,
            wait_ready=lambda: wait_until(
                lambda: r.exists(celery_app.WARM_KEY) == 1,
                timeout=60,
                what="the warm-up task",
                proc=proc,
                log_path=log,
            ),
        )
        wait_until(
            lambda: r.llen(celery_app.SAMPLES_KEY) >= sizes.latency,
            timeout=30,
            what=f"{sizes.latency} latency samples",
            proc=proc,
            log_path=log,
        )
    samples = [int(v) for v in r.lrange(celery_app.SAMPLES_KEY, 0, -1)]
    if len(samples) != sizes.latency:
        raise BenchError(f"got {len(samples)} latency samples, expected {sizes.latency}")
    return latency_metric(
        samples, worker=f"another process (celery worker, {pool} pool), producer: delay()"
    )


def run_celery(system: str, sizes: Sizes, workdir: Path) -> dict[str, Metric]:
    """Every measurement for one Celery variant (``"celery"`` or ``"celery-prefork"``)."""
    pool = POOLS[system]
    url = REDIS_URL
    prefix = system.replace("-", "_")
    celery_app.configure(url)
    results: dict[str, Metric] = {}
    try:
        with flushed_redis_db(url) as r:
            results["enqueue_single_sync"] = best_of(
                [_enqueue_single_once(r, sizes) for _ in range(sizes.peer_repeats)]
            )
            runs = [
                _bulk_and_drain_once(r, url, pool, sizes, workdir, f"{prefix}_drain_{rep}")
                for rep in range(sizes.peer_repeats)
            ]
            results["enqueue_bulk"] = best_of([b for b, _ in runs])
            results["drain"] = best_of([d for _, d in runs])
            results["pickup_latency"] = _latency(r, url, pool, sizes, workdir)
    finally:
        celery_app.app.close()
    return results
