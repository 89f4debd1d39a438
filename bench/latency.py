"""Pickup latency: the producer loop and the recorder every handler reports to.

The producer enqueues one warm-up job, waits until a worker has run it (so the worker is up
and listening), lets the worker go idle, then enqueues jobs one at a time on a fixed
schedule, ``gap`` seconds apart. Each job carries ``time.time_ns()`` taken just before its
enqueue call; the handler subtracts it from ``time.time_ns()`` as its first action. The
latency therefore covers the enqueue call itself, the wake-up of the idle worker, the claim
and the dispatch to the handler. ``time.time_ns()`` is the system clock, shared by every
process on the machine.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["Recorder", "produce", "IDLE_PAUSE"]

#: Seconds the producer waits after the warm-up job, so the worker is idle when it starts.
IDLE_PAUSE = 0.3


class Recorder:
    """Collects latencies in a worker; thread-safe (Huey runs handlers in threads).

    Args:
        expect: Latency samples to collect; ``done`` is set (and ``on_done`` called) when
            that many are in.
        ready_path: A file to create when the warm-up job runs (for a parent process).
    """

    def __init__(self, expect: int, ready_path: Path | None = None) -> None:
        self.expect = expect
        self.ready_path = ready_path
        self.samples_ns: list[int] = []
        self.ready = threading.Event()
        self.done = threading.Event()
        self.on_done: Callable[[], None] | None = None
        self.count = 0
        self.done_at = 0.0
        self._lock = threading.Lock()

    def stamp(self, enqueued_ns: int, warmup: bool) -> None:
        """Called first thing by a latency handler."""
        now = time.time_ns()
        if warmup:
            if self.ready_path is not None:
                self.ready_path.touch()
            self.ready.set()
            return
        with self._lock:
            self.samples_ns.append(now - enqueued_ns)
            finished = len(self.samples_ns) == self.expect
        if finished:
            self._finish()

    def tick(self) -> None:
        """Called by a no-op drain handler: count one completion."""
        with self._lock:
            self.count += 1
            finished = self.count == self.expect
        if finished:
            self.done_at = time.perf_counter()
            self._finish()

    def _finish(self) -> None:
        self.done.set()
        if self.on_done is not None:
            self.on_done()

    def dump(self, path: Path, **extra: object) -> None:
        """Write what was recorded as JSON (read back by the parent)."""
        path.write_text(json.dumps({"samples_ns": self.samples_ns, "count": self.count, **extra}))


def produce(
    enqueue: Callable[[int, bool], object],
    *,
    count: int,
    gap: float,
    wait_ready: Callable[[], None],
    idle_pause: float = IDLE_PAUSE,
) -> None:
    """Enqueue a warm-up job, wait for it, then ``count`` stamped jobs ``gap`` s apart.

    Args:
        enqueue: ``enqueue(enqueued_ns, warmup)`` puts one latency job in the queue.
        wait_ready: Blocks until the warm-up job has run (raises on timeout).
    """
    enqueue(time.time_ns(), True)
    wait_ready()
    time.sleep(idle_pause)
    start = time.perf_counter()
    for i in range(count):
        delay = start + i * gap - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        enqueue(time.time_ns(), False)
