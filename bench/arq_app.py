"""The arq worker child process of the benchmark, and the job functions it registers::

    python -m bench.arq_app --redis-url redis://127.0.0.1:6379/13 --poll-delay 0.01 \
        --expect 20000 --deadline 120

An ``arq.worker.Worker`` (what ``arq.run_worker`` builds and runs) with ``max_jobs=10``,
``keep_result=0`` (results are not stored) and the given ``poll_delay``; arq's defaults
otherwise. Logging is left at Python's default (WARNING), as Celery's ``--loglevel=WARNING``:
arq logs every job start and end at INFO.

The jobs report through plain Redis keys in the same database, over the worker's own
connection pool (``ctx["redis"]``):

* ``noop`` increments :data:`COUNT_KEY`; the call that reaches ``--expect`` stores
  ``time.time_ns()`` in :data:`DONE_KEY`.
* ``stamp`` pushes its pickup latency (``time.time_ns() - enqueued_ns``) to
  :data:`SAMPLES_KEY`; the warm-up one sets :data:`WARM_KEY`.
* ``on_startup`` (run once the worker's pool is connected, right before its first poll of the
  queue) stores ``time.time_ns()`` in :data:`READY_KEY` and arms a timer that sends the worker
  SIGTERM after ``--deadline`` seconds, so it never outlives a parent that forgot it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Worker

__all__ = [
    "COUNT_KEY",
    "DONE_KEY",
    "READY_KEY",
    "WARM_KEY",
    "SAMPLES_KEY",
    "NOOP",
    "STAMP",
    "DEFAULT_POLL_DELAY",
    "noop",
    "stamp",
    "make_worker",
    "main",
]

COUNT_KEY = "bench:count"
DONE_KEY = "bench:done_ns"
READY_KEY = "bench:ready_ns"
WARM_KEY = "bench:warm"
SAMPLES_KEY = "bench:samples_ns"

#: Job function names (arq registers a coroutine under its ``__qualname__``).
NOOP = "noop"
STAMP = "stamp"

#: arq's own default ``poll_delay`` (seconds).
DEFAULT_POLL_DELAY = 0.5

_expect = 0


async def noop(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """The no-op drain job: counts its calls in Redis."""
    r = ctx["redis"]
    if await r.incr(COUNT_KEY) == _expect:
        await r.set(DONE_KEY, time.time_ns())


async def stamp(ctx: dict[str, Any], enqueued_ns: int, warmup: bool) -> None:
    """The latency job: its first action measures how long it waited."""
    latency = time.time_ns() - enqueued_ns
    r = ctx["redis"]
    if warmup:
        await r.set(WARM_KEY, 1)
    else:
        await r.rpush(SAMPLES_KEY, latency)


def make_worker(
    redis_url: str, *, poll_delay: float, concurrency: int, deadline: float = 0.0
) -> Worker:
    """The benchmark's worker: ``max_jobs=concurrency``, results off, the given poll delay."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        await ctx["redis"].set(READY_KEY, time.time_ns())
        if deadline > 0:
            loop = asyncio.get_running_loop()
            loop.call_later(deadline, os.kill, os.getpid(), signal.SIGTERM)

    return Worker(
        functions=[noop, stamp],
        redis_settings=RedisSettings.from_dsn(redis_url),
        on_startup=on_startup,
        max_jobs=concurrency,
        keep_result=0,
        poll_delay=poll_delay,
    )


def main(argv: list[str] | None = None) -> None:
    global _expect
    parser = argparse.ArgumentParser(prog="python -m bench.arq_app")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--poll-delay", type=float, default=DEFAULT_POLL_DELAY)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--deadline", type=float, default=0.0)
    args = parser.parse_args(argv)
    _expect = args.expect
    make_worker(
        args.redis_url,
        poll_delay=args.poll_delay,
        concurrency=args.concurrency,
        deadline=args.deadline,
    ).run()


if __name__ == "__main__":
    main()
