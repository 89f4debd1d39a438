"""Huey measurements: ``SqliteHuey``, the peer Dispatch is compared with.

Two variants are run:

* ``huey``: ``SqliteHuey`` exactly as it comes (WAL, SQLite's default ``synchronous=FULL``,
  so every commit fsyncs the WAL).
* ``huey-normal``: the same with ``PRAGMA synchronous=NORMAL``, the durability Dispatch's
  SQLite store uses (WAL + NORMAL: safe against process crashes, may lose the last commits on
  power loss). Huey only offers ``fsync=True/False`` (FULL/OFF), so a two-line storage subclass
  sets NORMAL; this variant separates "Huey's design" from "Huey's fsync default".

The consumer runs in a child process (``python -m bench.huey_consumer``) at Huey's default
polling settings (``initial_delay=0.1``, ``backoff=1.15``, ``max_delay=10``).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huey import SqliteHuey
from huey.storage import SqliteStorage

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

__all__ = ["HueyTasks", "make_huey", "run_huey", "SYSTEMS"]

#: Benchmark system name -> ``synchronous`` variant.
SYSTEMS = {"huey": "default", "huey-normal": "normal"}

NOTE = "hello"


class _NormalSyncStorage(SqliteStorage):  # type: ignore[misc]
    """Huey's SQLite storage with ``PRAGMA synchronous=NORMAL`` (Dispatch's setting)."""

    def _create_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = super()._create_connection()
        conn.execute("pragma synchronous=1")
        return conn


@dataclass
class HueyTasks:
    """The task wrappers registered on a benchmark Huey."""

    huey: Any
    noop: Any
    stamp: Any


def make_huey(path: Path, *, synchronous: str, recorder: Recorder | None = None) -> HueyTasks:
    """A ``SqliteHuey`` on ``path`` with the benchmark's tasks.

    Task names include the defining module, so the producer and the consumer process both
    build their Huey here.
    """
    options: dict[str, Any] = {}
    if synchronous == "normal":
        options["storage_class"] = _NormalSyncStorage
    elif synchronous != "default":
        raise ValueError(f"unknown synchronous variant {synchronous!r}")
    huey = SqliteHuey(name="bench", filename=str(path), **options)

    @huey.task()  # type: ignore[untyped-decorator]
    def noop(payload: dict[str, Any]) -> None:
        if recorder is not None:
            recorder.tick()

    @huey.task()  # type: ignore[untyped-decorator]
    def stamp(enqueued_ns: int, warmup: bool) -> None:
        if recorder is not None:
            recorder.stamp(enqueued_ns, warmup)

    return HueyTasks(huey=huey, noop=noop, stamp=stamp)


def _consumer_args(
    command: str, db: Path, synchronous: str, expect: int, out: Path, sizes: Sizes
) -> list[str]:
    return [
        command,
        "--db",
        str(db),
        "--synchronous",
        synchronous,
        "--expect",
        str(expect),
        "--workers",
        str(sizes.concurrency),
        "--out",
        str(out),
        "--deadline",
        str(sizes.child_deadline),
    ]


def _enqueue_single_once(synchronous: str, sizes: Sizes, db: Path) -> Metric:
    """``sizes.single`` calls of the task, as a web app enqueues."""
    tasks = make_huey(db, synchronous=synchronous)
    try:
        for i in range(sizes.warmup):
            tasks.noop({"user_id": i, "note": NOTE})
        payloads = [{"user_id": i, "note": NOTE} for i in range(sizes.single)]
        noop = tasks.noop
        t0 = time.perf_counter()
        for p in payloads:
            noop(p)
        return rate_metric(sizes.single, time.perf_counter() - t0)
    finally:
        tasks.huey.storage.close()


def _bulk_and_drain_once(
    synchronous: str, sizes: Sizes, workdir: Path, name: str
) -> tuple[Metric, Metric]:
    """Fill a fresh database with task.map() (timed), then drain it in a consumer process."""
    if sizes.drain < sizes.bulk:
        raise BenchError("sizes.drain must be >= sizes.bulk")
    db = workdir / f"{name}.db"
    tasks = make_huey(db, synchronous=synchronous)
    try:
        payloads = [{"user_id": i, "note": NOTE} for i in range(sizes.bulk)]
        t0 = time.perf_counter()
        tasks.noop.map(payloads)
        bulk = rate_metric(
            sizes.bulk,
            time.perf_counter() - t0,
            note="no bulk API: task.map() commits one job at a time",
        )
        if sizes.drain > sizes.bulk:
            tasks.noop.map([{"user_id": i, "note": NOTE} for i in range(sizes.drain - sizes.bulk)])
    finally:
        tasks.huey.storage.close()

    # The consumer counts completions itself and reports the seconds from consumer.start() to
    # the last one.
    out, log = workdir / f"{name}.json", workdir / f"{name}.log"
    args = _consumer_args("drain", db, synchronous, sizes.drain, out, sizes)
    with child_process("bench.huey_consumer", args, log) as proc:
        finish_child(proc, timeout=sizes.child_deadline + 30, log_path=log)
    data = json.loads(out.read_text())
    if data["count"] != sizes.drain:
        raise BenchError(f"huey consumer ran {data['count']} jobs, expected {sizes.drain}")
    drain = rate_metric(
        sizes.drain,
        data["seconds"],
        concurrency=sizes.concurrency,
        note="consumer process, thread workers, default polling",
    )
    return bulk, drain


def run_huey(system: str, sizes: Sizes, workdir: Path) -> dict[str, Metric]:
    """Every measurement for one Huey variant (``"huey"`` or ``"huey-normal"``)."""
    synchronous = SYSTEMS[system]
    prefix = system.replace("-", "_")
    results: dict[str, Metric] = {}

    # 1. One-at-a-time enqueue.
    results["enqueue_single_sync"] = best_of(
        [
            _enqueue_single_once(synchronous, sizes, workdir / f"{prefix}_single_{rep}.db")
            for rep in range(sizes.repeats)
        ]
    )

    # 2 and 3. "Bulk" enqueue (Huey has none; task.map() commits one by one), then drain.
    runs = [
        _bulk_and_drain_once(synchronous, sizes, workdir, f"{prefix}_drain_{rep}")
        for rep in range(sizes.repeats)
    ]
    results["enqueue_bulk"] = best_of([bulk for bulk, _ in runs])
    results["drain"] = best_of([drain for _, drain in runs])

    # 4. Pickup latency of an idle consumer in another process.
    latency_db = workdir / f"{prefix}_latency.db"
    tasks = make_huey(latency_db, synchronous=synchronous)
    out, ready = workdir / f"{prefix}_latency.json", workdir / f"{prefix}_ready"
    log = workdir / f"{prefix}_latency.log"
    args = [
        *_consumer_args("latency", latency_db, synchronous, sizes.latency, out, sizes),
        "--ready",
        str(ready),
    ]
    stamp = tasks.stamp
    try:
        with child_process("bench.huey_consumer", args, log) as proc:
            produce(
                lambda ns, warm: stamp(ns, warm),
                count=sizes.latency,
                gap=sizes.latency_gap,
                wait_ready=lambda: wait_for_path(ready, timeout=60, proc=proc, log_path=log),
            )
            finish_child(proc, timeout=30, log_path=log)
    finally:
        tasks.huey.storage.close()
    samples: list[int] = json.loads(out.read_text())["samples_ns"]
    if len(samples) != sizes.latency:
        raise BenchError(f"got {len(samples)} latency samples, expected {sizes.latency}")
    results["pickup_latency"] = latency_metric(
        samples, worker=f"another process (consumer, {sizes.concurrency} thread workers)"
    )
    return results
