"""The Celery app of the benchmark, shared by the producer and the worker child process::

    BENCH_CELERY_BROKER=redis://127.0.0.1:6379/13 BENCH_CELERY_EXPECT=20000 \
        python -m celery -A bench.celery_app worker --pool=threads --concurrency=10

Results are off (``task_ignore_result``, no result backend); tasks report through plain Redis
keys in the broker's database instead:

* ``noop`` increments :data:`COUNT_KEY`; the call that reaches ``BENCH_CELERY_EXPECT`` stores
  ``time.time_ns()`` in :data:`DONE_KEY`.
* ``stamp`` pushes its pickup latency (``time.time_ns() - enqueued_ns``) to
  :data:`SAMPLES_KEY`; the warm-up one sets :data:`WARM_KEY`.
* The ``worker_ready`` signal (sent once the worker consumes from the queue) stores
  ``time.time_ns()`` in :data:`READY_KEY` and arms a timer that stops the worker after
  ``BENCH_CELERY_DEADLINE`` seconds, so it never outlives a parent that forgot it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import redis
from celery import Celery, signals  # type: ignore[import-untyped]

from bench.services import REDIS_URL

__all__ = [
    "BROKER_ENV",
    "EXPECT_ENV",
    "DEADLINE_ENV",
    "COUNT_KEY",
    "DONE_KEY",
    "READY_KEY",
    "WARM_KEY",
    "SAMPLES_KEY",
    "app",
    "noop",
    "stamp",
    "configure",
    "client",
]

BROKER_ENV = "BENCH_CELERY_BROKER"
EXPECT_ENV = "BENCH_CELERY_EXPECT"
DEADLINE_ENV = "BENCH_CELERY_DEADLINE"

COUNT_KEY = "bench:count"
DONE_KEY = "bench:done_ns"
READY_KEY = "bench:ready_ns"
WARM_KEY = "bench:warm"
SAMPLES_KEY = "bench:samples_ns"

app = Celery("bench", set_as_current=False)
app.conf.update(
    broker_url=os.environ.get(BROKER_ENV, REDIS_URL),
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    result_backend=None,
    worker_hijack_root_logger=False,
)

_expect = int(os.environ.get(EXPECT_ENV, "0"))
_client: redis.Redis | None = None
_client_lock = threading.Lock()


def configure(broker_url: str) -> None:
    """Point the app (and :func:`client`) at ``broker_url``; call before the first send."""
    global _client
    app.conf.broker_url = broker_url
    with _client_lock:
        if _client is not None:
            _client.close()
        _client = None


def client() -> redis.Redis:
    """A Redis client on the broker's database (thread-safe; safe across fork)."""
    global _client
    with _client_lock:
        if _client is None:
            _client = redis.Redis.from_url(str(app.conf.broker_url))
        return _client


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(payload: dict[str, Any]) -> None:
    """The no-op drain task: counts its calls in Redis."""
    if client().incr(COUNT_KEY) == _expect:
        client().set(DONE_KEY, time.time_ns())


@app.task(name="bench.stamp")  # type: ignore[untyped-decorator]
def stamp(enqueued_ns: int, warmup: bool) -> None:
    """The latency task: its first action measures how long it waited."""
    latency = time.time_ns() - enqueued_ns
    if warmup:
        client().set(WARM_KEY, 1)
    else:
        client().rpush(SAMPLES_KEY, latency)


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _on_worker_ready(**_: Any) -> None:
    client().set(READY_KEY, time.time_ns())
    deadline = float(os.environ.get(DEADLINE_ENV, "0"))
    if deadline > 0:
        pid = os.getpid()
        timer = threading.Timer(deadline, lambda: os.kill(pid, signal.SIGTERM))
        timer.daemon = True
        timer.start()
