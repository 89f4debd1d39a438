"""arq measurements: Redis, results off, worker in a child process.

arq (``python-arq/arq``) is asyncio-only: a job is a Redis string (the pickled call) plus a
member of a sorted set (the queue), and the worker *polls* that sorted set every
``poll_delay`` seconds (``ZRANGEBYSCORE``); there is no blocking pop and no notification. Its
default ``poll_delay`` is 0.5 s, which caps both its pickup latency (a job waits up to 0.5 s)
and its drain: a poll reads at most ``queue_read_limit`` job ids (``max(5 * max_jobs, 100)``
= 100), so the default drains at most 100 jobs per 0.5 s, 200 jobs/s. The **reported column
uses ``poll_delay=0.01``** (the "about 2,000 jobs/s at a 10 ms poll delay" setting the
comparison refers to), where the cap (10,000 jobs/s) no longer binds: the worker starts its
jobs one after the other, four round trips each. The same drain (of
:data:`DEFAULT_POLL_DRAIN` jobs) and latency at arq's default 0.5 s are in the JSON as
``drain_default_poll`` and ``pickup_latency_default_poll``.

The worker (``python -m bench.arq_app``, an ``arq.worker.Worker`` as ``arq.run_worker``
builds it) runs in a child process with ``max_jobs=10`` (concurrency 10, also arq's default)
and ``keep_result=0`` (no result is stored). The producer is this process, with one event
loop and one ``arq.connections.create_pool`` pool:

* ``enqueue_single_async``: ``await pool.enqueue_job("noop", payload)`` one at a time, arq's
  own API. Each call is a ``WATCH``/``EXISTS`` then ``MULTI``/``PSETEX``/``ZADD``/``EXEC``
  transaction: three round trips.
* ``enqueue_single_sync``: arq has no sync API; a sync caller drives the same call with
  ``loop.run_until_complete(pool.enqueue_job(...))`` on a long-lived loop, one call each.
* ``enqueue_bulk``: arq has **no bulk API** either (``enqueue_job`` one by one is all there
  is, and its transaction takes a connection of its own, so it cannot share a pipeline):
  ``asyncio.gather`` of one ``enqueue_job`` per payload over the one pool, at most
  :data:`BULK_INFLIGHT` in flight (each call in flight holds a connection of its own).
* ``drain``: the queue is filled first (the bulk run above), then the worker starts; timed
  from its ``on_startup`` hook (pool connected, right before its first poll) to the last
  completion. The job counts itself with a Redis ``INCR``, as Celery's does.
* ``pickup_latency``: an idle worker; this process enqueues with the sync-driven call above.

The Redis database (``BENCH_REDIS_URL``, not 0) is flushed before and after every
measurement.

arq 0.28 declares ``redis<6``, Celery's ``kombu[redis]`` needs ``redis>=6.4``: in one venv
arq runs on a redis-py outside its declared range (it works; with redis-py 5.3 its enqueue
was 20-45% faster here).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import redis
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import default_queue_name

from bench import arq_app
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
from bench.services import REDIS_URL, flushed_redis_db

__all__ = ["POLL_DELAY", "BULK_INFLIGHT", "run_arq"]

#: The worker's ``poll_delay`` for the reported column (arq's default is 0.5 s).
POLL_DELAY = 0.01
#: ``enqueue_job`` calls in flight at once in the bulk enqueue. Here 10, 50 and 100 gave about
#: 2,200, 2,800 and 2,300 jobs/s; redis-py 8's asyncio pool refuses more than 100 connections.
BULK_INFLIGHT = 50
#: Jobs in the drain at arq's default poll delay: it runs at a steady 200 jobs/s (see above),
#: so a full 20,000-job drain would take 100 s for the same figure.
DEFAULT_POLL_DRAIN = 2_000

NOTE = "hello"

_T = TypeVar("_T")


class _Producer:
    """This process's side: one event loop and one arq pool, driven from sync code."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.pool: ArqRedis = self.loop.run_until_complete(
                create_pool(RedisSettings.from_dsn(url))
            )
        except BaseException:
            self.loop.close()
            raise

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self.loop.run_until_complete(coro)

    def enqueue(self, function: str, *args: Any) -> None:
        """One ``enqueue_job`` call, as a sync caller makes it."""
        if self.loop.run_until_complete(self.pool.enqueue_job(function, *args)) is None:
            raise BenchError(f"arq refused a {function} job (duplicate id)")

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.pool.aclose())
        finally:
            self.loop.close()


@contextlib.contextmanager
def _worker(
    url: str, poll_delay: float, sizes: Sizes, log: Path, *, expect: int = 0
) -> Iterator[subprocess.Popen[bytes]]:
    """An arq worker child process (reaped on exit)."""
    args = [
        "--redis-url",
        url,
        "--poll-delay",
        str(poll_delay),
        "--concurrency",
        str(sizes.concurrency),
        "--expect",
        str(expect),
        "--deadline",
        str(sizes.child_deadline),
    ]
    with child_process("bench.arq_app", args, log) as proc:
        yield proc


def _payloads(n: int) -> list[dict[str, Any]]:
    return [{"user_id": i, "note": NOTE} for i in range(n)]


def _poll_note(poll_delay: float) -> str:
    default = " (arq's default)" if poll_delay == arq_app.DEFAULT_POLL_DELAY else ""
    return f"poll_delay={poll_delay:g}s{default}"


# -- enqueue -----------------------------------------------------------------------------------


def _enqueue_single_sync_once(r: redis.Redis, prod: _Producer, sizes: Sizes) -> Metric:
    """``sizes.single`` calls of ``loop.run_until_complete(pool.enqueue_job(...))``."""
    r.flushdb()
    for p in _payloads(sizes.warmup):
        prod.enqueue(arq_app.NOOP, p)
    payloads = _payloads(sizes.single)
    t0 = time.perf_counter()
    for p in payloads:
        prod.enqueue(arq_app.NOOP, p)
    return rate_metric(
        sizes.single,
        time.perf_counter() - t0,
        note="no sync API: loop.run_until_complete(pool.enqueue_job(...)) per job",
    )


async def _enqueue_single_async(pool: ArqRedis, sizes: Sizes) -> float:
    for p in _payloads(sizes.warmup):
        await pool.enqueue_job(arq_app.NOOP, p)
    payloads = _payloads(sizes.single)
    t0 = time.perf_counter()
    for p in payloads:
        await pool.enqueue_job(arq_app.NOOP, p)
    return time.perf_counter() - t0


def _enqueue_single_async_once(r: redis.Redis, prod: _Producer, sizes: Sizes) -> Metric:
    """``sizes.single`` awaits of ``pool.enqueue_job(...)``, one at a time."""
    r.flushdb()
    seconds = prod.run(_enqueue_single_async(prod.pool, sizes))
    return rate_metric(sizes.single, seconds, note="await pool.enqueue_job(...) per job")


async def _enqueue_many(pool: ArqRedis, payloads: list[dict[str, Any]]) -> None:
    """One ``enqueue_job`` per payload, gathered, at most :data:`BULK_INFLIGHT` at once."""
    sem = asyncio.Semaphore(BULK_INFLIGHT)

    async def one(p: dict[str, Any]) -> None:
        async with sem:
            if await pool.enqueue_job(arq_app.NOOP, p) is None:
                raise BenchError("arq refused a noop job (duplicate id)")

    await asyncio.gather(*(one(p) for p in payloads))


# -- drain -------------------------------------------------------------------------------------


def _bulk_and_drain_once(
    r: redis.Redis,
    prod: _Producer,
    url: str,
    poll_delay: float,
    sizes: Sizes,
    workdir: Path,
    name: str,
    *,
    drain_n: int,
) -> tuple[Metric, Metric]:
    """Fill an empty queue with gathered ``enqueue_job`` calls (the first ``sizes.bulk``
    timed), then start a worker and time it from ``on_startup`` to the last completion."""
    r.flushdb()
    bulk_n = min(sizes.bulk, drain_n)
    t0 = time.perf_counter()
    prod.run(_enqueue_many(prod.pool, _payloads(bulk_n)))
    bulk = rate_metric(
        bulk_n,
        time.perf_counter() - t0,
        inflight=BULK_INFLIGHT,
        note=f"no bulk API: asyncio.gather of enqueue_job calls over one pool, "
        f"at most {BULK_INFLIGHT} in flight",
    )
    if drain_n > bulk_n:
        prod.run(_enqueue_many(prod.pool, _payloads(drain_n - bulk_n)))
    queued = int(r.zcard(default_queue_name))
    if queued != drain_n:
        raise BenchError(f"arq queue holds {queued} jobs, expected {drain_n}")

    log = workdir / f"{name}.log"
    spawned_ns = time.time_ns()
    with _worker(url, poll_delay, sizes, log, expect=drain_n) as proc:
        wait_until(
            lambda: r.exists(arq_app.DONE_KEY) == 1,
            timeout=sizes.child_deadline,
            what=f"{drain_n} arq jobs",
            proc=proc,
            log_path=log,
            interval=0.01,
        )
    ready_ns, done_ns, count = (
        int(v or 0) for v in r.mget(arq_app.READY_KEY, arq_app.DONE_KEY, arq_app.COUNT_KEY)
    )
    if count != drain_n:
        raise BenchError(f"arq worker ran {count} jobs, expected {drain_n}")
    drain = rate_metric(
        drain_n,
        (done_ns - ready_ns) / 1e9,
        concurrency=sizes.concurrency,
        poll_delay_s=poll_delay,
        startup_s=round((ready_ns - spawned_ns) / 1e9, 3),
        note=f"worker process, max_jobs={sizes.concurrency}, {_poll_note(poll_delay)}; "
        "timed from on_startup to the last completion",
    )
    return bulk, drain


# -- pickup latency ----------------------------------------------------------------------------


def _latency(
    r: redis.Redis, prod: _Producer, url: str, poll_delay: float, sizes: Sizes, workdir: Path
) -> Metric:
    """An idle worker in another process; this process enqueues ``stamp(now_ns, warmup)``."""
    r.flushdb()
    log = workdir / f"arq_latency_{poll_delay:g}.log"
    with _worker(url, poll_delay, sizes, log) as proc:
        produce(
            lambda ns, warm: prod.enqueue(arq_app.STAMP, ns, warm),
            count=sizes.latency,
            gap=sizes.latency_gap,
            wait_ready=lambda: wait_until(
                lambda: r.exists(arq_app.WARM_KEY) == 1,
                timeout=60,
                what="the warm-up job",
                proc=proc,
                log_path=log,
            ),
        )
        wait_until(
            lambda: r.llen(arq_app.SAMPLES_KEY) >= sizes.latency,
            timeout=30,
            what=f"{sizes.latency} latency samples",
            proc=proc,
            log_path=log,
        )
    samples = [int(v) for v in r.lrange(arq_app.SAMPLES_KEY, 0, -1)]
    if len(samples) != sizes.latency:
        raise BenchError(f"got {len(samples)} latency samples, expected {sizes.latency}")
    return latency_metric(
        samples,
        poll_delay_s=poll_delay,
        worker=f"another process (arq worker, max_jobs={sizes.concurrency}, "
        f"{_poll_note(poll_delay)}), producer: run_until_complete(enqueue_job())",
    )


# -- the whole system --------------------------------------------------------------------------


def run_arq(sizes: Sizes, workdir: Path) -> dict[str, Metric]:
    """Every measurement for arq: the reported ones at ``poll_delay=0.01``, plus the drain and
    the latency at arq's default 0.5 s (``drain_default_poll``, ``pickup_latency_default_poll``).
    """
    url = REDIS_URL
    results: dict[str, Metric] = {}
    with flushed_redis_db(url) as r:
        prod = _Producer(url)
        try:
            results["enqueue_single_sync"] = best_of(
                [_enqueue_single_sync_once(r, prod, sizes) for _ in range(sizes.peer_repeats)]
            )
            results["enqueue_single_async"] = best_of(
                [_enqueue_single_async_once(r, prod, sizes) for _ in range(sizes.peer_repeats)]
            )
            runs = [
                _bulk_and_drain_once(
                    r,
                    prod,
                    url,
                    POLL_DELAY,
                    sizes,
                    workdir,
                    f"arq_drain_{rep}",
                    drain_n=sizes.drain,
                )
                for rep in range(sizes.peer_repeats)
            ]
            results["enqueue_bulk"] = best_of([b for b, _ in runs])
            results["drain"] = best_of([d for _, d in runs])
            results["pickup_latency"] = _latency(r, prod, url, POLL_DELAY, sizes, workdir)
            slow = arq_app.DEFAULT_POLL_DELAY
            _, drain_slow = _bulk_and_drain_once(
                r,
                prod,
                url,
                slow,
                sizes,
                workdir,
                "arq_drain_default_poll",
                drain_n=min(sizes.drain, DEFAULT_POLL_DRAIN),
            )
            results["drain_default_poll"] = drain_slow
            results["pickup_latency_default_poll"] = _latency(r, prod, url, slow, sizes, workdir)
        finally:
            prod.close()
    return results
