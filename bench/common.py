"""Shared helpers: run sizes, metrics, percentiles and child-process management."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "REPO_ROOT",
    "Sizes",
    "FULL",
    "QUICK",
    "Metric",
    "BenchError",
    "rate_metric",
    "best_of",
    "latency_metric",
    "percentile",
    "child_process",
    "wait_until",
    "wait_for_path",
    "finish_child",
    "log_tail",
]

#: The directory that holds the ``bench`` package (children run from here).
REPO_ROOT = Path(__file__).resolve().parent.parent

#: One measurement as stored in the JSON report.
Metric = dict[str, Any]


class BenchError(RuntimeError):
    """A measurement could not be taken (a child died, a timeout, a miscount...)."""


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    #: One-at-a-time enqueues (sync path, async path and Huey's ``task()``).
    single: int
    #: Jobs in the one bulk enqueue call.
    bulk: int
    #: Pre-enqueued no-op jobs a worker drains.
    drain: int
    #: Jobs in the pickup-latency run.
    latency: int
    #: Seconds between two latency jobs (long enough for the worker to go idle).
    latency_gap: float
    #: Worker concurrency (Dispatch) / worker threads (Huey).
    concurrency: int = 10
    #: Throughput measurements are repeated (each on a fresh store) and the best run kept.
    repeats: int = 2
    #: The same for the slow PostgreSQL/Redis peers (Procrastinate, Celery), whose 20,000-job
    #: drains take half a minute each: one run keeps the whole benchmark under 5 minutes.
    peer_repeats: int = 1
    #: Untimed enqueues before the timed single-enqueue loops.
    warmup: int = 100
    #: Seconds a child process may live before it gives up on its own.
    child_deadline: float = 120.0
    #: Runs of the 10-step no-op workflow per workflow measurement (``bench.workflows``).
    workflows: int = 500

    def as_dict(self) -> dict[str, Any]:
        return {
            "single": self.single,
            "bulk": self.bulk,
            "drain": self.drain,
            "latency": self.latency,
            "latency_gap_s": self.latency_gap,
            "concurrency": self.concurrency,
            "repeats": self.repeats,
            "peer_repeats": self.peer_repeats,
            "warmup": self.warmup,
            "workflows": self.workflows,
        }


FULL = Sizes(single=5_000, bulk=20_000, drain=20_000, latency=200, latency_gap=0.020)
QUICK = Sizes(
    single=300,
    bulk=1_000,
    drain=1_000,
    latency=20,
    latency_gap=0.010,
    repeats=1,
    warmup=20,
    child_deadline=60.0,
    workflows=30,
)


def rate_metric(n: int, seconds: float, **extra: Any) -> Metric:
    """A throughput measurement: ``n`` operations in ``seconds``."""
    rate = n / seconds if seconds > 0 else 0.0
    return {"n": n, "seconds": round(seconds, 6), "rate": round(rate, 1), **extra}


def best_of(runs: Sequence[Metric]) -> Metric:
    """The fastest of repeated throughput runs, with every run's rate listed."""
    best = max(runs, key=lambda m: float(m["rate"]))
    return {**best, "runs": [m["rate"] for m in runs]}


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (``p`` in 0..100)."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_metric(samples_ns: Sequence[int], **extra: Any) -> Metric:
    """Summary of pickup latencies given in nanoseconds; reported in milliseconds."""
    ms = sorted(s / 1e6 for s in samples_ns)
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(sum(ms) / len(ms), 3),
        "min_ms": round(ms[0], 3),
        "max_ms": round(ms[-1], 3),
        **extra,
    }


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a child's log, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


@contextlib.contextmanager
def child_process(
    module: str,
    args: Sequence[str],
    log_path: Path,
    *,
    env_extra: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m module args...`` from the repository root; always reap it.

    Output goes to ``log_path``; ``env_extra`` is added to the environment. On leaving the
    block a still-running child is sent SIGTERM, then SIGKILL after 5 s, and waited for. The
    child leads a process group of its own; whatever is left of that group afterwards (e.g. a
    Celery prefork pool process whose parent was killed) gets SIGKILL, so no stray process
    survives the benchmark.
    """
    env = {**os.environ, **(env_extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
    interval: float = 0.002,
) -> None:
    """Poll ``predicate`` until it holds; fail early if ``proc`` exits.

    Raises:
        BenchError: the timeout passed or the child died first.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            tail = log_tail(log_path) if log_path else ""
            raise BenchError(
                f"child exited with {proc.returncode} while waiting for {what}\n{tail}"
            )
        if time.monotonic() > deadline:
            tail = log_tail(log_path) if log_path else ""
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")
        time.sleep(interval)


def wait_for_path(
    path: Path, *, timeout: float, proc: subprocess.Popen[bytes], log_path: Path
) -> None:
    """Wait until a child creates ``path``."""
    wait_until(path.exists, timeout=timeout, what=f"{path.name}", proc=proc, log_path=log_path)


def finish_child(proc: subprocess.Popen[bytes], *, timeout: float, log_path: Path) -> None:
    """Wait for a child to exit by itself, successfully.

    Raises:
        BenchError: it did not exit in time or exited with an error.
    """
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(
            f"child did not exit within {timeout:.0f}s\n{log_tail(log_path)}"
        ) from None
    if rc != 0:
        raise BenchError(f"child exited with {rc}\n{log_tail(log_path)}")
