"""Dispatch measurements, for the memory, SQLite, PostgreSQL and Redis stores.

Every measurement gets a fresh store: a new SQLite file, for PostgreSQL a new schema
(``?schema=bench_<random>_<name>``, every one dropped at the end of the run), for Redis a new
key prefix in ``BENCH_REDIS_URL``'s database (``?prefix=bench_<random>_<name>``, its keys
deleted before the next measurement and at the end).

Also the entry point of the worker child process used for the cross-process pickup latency::

    python -m bench.dispatch_side worker --url sqlite:////tmp/x/latency.db --expect 200 \
        --out result.json --ready ready.flag
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from bench.services import PgSchemas, RedisPrefixes
from dispatch_core import Engine, JobDefinition

__all__ = ["Ping", "Stamp", "BenchJobs", "bench_engine", "make_engine", "run_dispatch"]

#: ``url_for(name)``: the URL of a fresh, empty store for the measurement called ``name``.
UrlFor = Callable[[str], str]

NOTE = "hello"


@dataclass
class Ping:
    """The small payload of the enqueue and drain jobs."""

    user_id: int
    note: str


@dataclass
class Stamp:
    """The payload of the latency jobs: when the producer enqueued it."""

    enqueued_ns: int
    warmup: bool = False


@dataclass
class BenchJobs:
    """The job definitions registered on a benchmark engine."""

    noop: JobDefinition[Ping]
    noop_sync: JobDefinition[Ping]
    stamp: JobDefinition[Stamp]


#: URL scheme -> the module of the store plugin that serves it (``memory://`` is built in).
_STORE_PLUGINS = {
    "sqlite": "dispatch_plugins.sqlite.plugin",
    "postgresql": "dispatch_plugins.postgres.plugin",
    "postgres": "dispatch_plugins.postgres.plugin",
    "redis": "dispatch_plugins.redis.plugin",
    "rediss": "dispatch_plugins.redis.plugin",
    "unix": "dispatch_plugins.redis.plugin",
}


def bench_engine(url: str) -> Engine:
    """``Engine(url)`` with the store's plugin only: no entry points are loaded.

    Whatever else is installed in the virtualenv (``dispatch-otel``, ``dispatch-webhooks``...)
    would otherwise register its hooks on every engine and be measured with it: with
    ``dispatch-otel`` installed (and no OpenTelemetry SDK configured) each enqueued job is
    handed to a hook thread, which halved the Redis store's bulk enqueue here. The cost of
    that plugin has a table of its own (``--only otel``).
    """
    scheme = url.split(":", 1)[0]
    module = _STORE_PLUGINS.get(scheme)
    plugins = [importlib.import_module(module)] if module else []
    return Engine(url, load_entrypoints=False, plugins=plugins)


def make_engine(url: str, recorder: Recorder | None = None) -> tuple[Engine, BenchJobs]:
    """An engine on ``url`` with the benchmark's jobs (stable names, so processes agree)."""
    engine = bench_engine(url)

    @engine.job(name="bench.noop", max_retries=0)
    async def noop(payload: Ping) -> None:
        return None

    @engine.job(name="bench.noop_sync", max_retries=0)
    def noop_sync(payload: Ping) -> None:
        return None

    @engine.job(name="bench.stamp", max_retries=0)
    async def stamp(payload: Stamp) -> None:
        if recorder is not None:
            recorder.stamp(payload.enqueued_ns, payload.warmup)

    return engine, BenchJobs(noop=noop, noop_sync=noop_sync, stamp=stamp)


@contextlib.contextmanager
def _stores(store: str, workdir: Path) -> Iterator[UrlFor]:
    """Where each measurement's fresh store lives; cleans up on exit."""
    if store == "memory":
        yield lambda name: "memory://"
    elif store == "sqlite":
        # The files go with the run's temporary directory.
        yield lambda name: f"sqlite:///{workdir / name}.db"
    elif store == "postgres":
        with PgSchemas() as schemas:
            yield schemas.url
    elif store == "redis":
        with RedisPrefixes() as prefixes:
            yield prefixes.url
    else:
        raise ValueError(f"unknown store {store!r}")


def _prepare(engine: Engine) -> None:
    """Open the store once (creating the schema) and close it again."""

    async def open_close() -> None:
        async with engine:
            pass

    asyncio.run(open_close())


# -- enqueue ---------------------------------------------------------------------------------------


def _enqueue_single_once(url_for: UrlFor, sizes: Sizes, rep: int) -> tuple[Metric, Metric]:
    """One sync and one async run of ``sizes.single`` one-at-a-time enqueues."""
    engine, jobs = make_engine(url_for(f"single_{rep}"))
    _prepare(engine)
    payloads = [Ping(i, NOTE) for i in range(sizes.single)]
    try:
        for i in range(sizes.warmup):
            jobs.noop.enqueue(Ping(i, NOTE))
        enqueue = jobs.noop.enqueue
        t0 = time.perf_counter()
        for p in payloads:
            enqueue(p)
        sync = rate_metric(sizes.single, time.perf_counter() - t0)
    finally:
        engine.close()

    async def single_async() -> Metric:
        async with engine:
            for i in range(sizes.warmup):
                await jobs.noop.aenqueue(Ping(i, NOTE))
            aenqueue = jobs.noop.aenqueue
            t0 = time.perf_counter()
            for p in payloads:
                await aenqueue(p)
            return rate_metric(sizes.single, time.perf_counter() - t0)

    return sync, asyncio.run(single_async())


def _enqueue_single(url_for: UrlFor, sizes: Sizes) -> dict[str, Metric]:
    runs = [_enqueue_single_once(url_for, sizes, rep) for rep in range(sizes.repeats)]
    return {
        "enqueue_single_sync": best_of([sync for sync, _ in runs]),
        "enqueue_single_async": best_of([asyn for _, asyn in runs]),
    }


# -- drain -----------------------------------------------------------------------------------------


async def _timed_drain(engine: Engine, n: int, sizes: Sizes, *, prefetch: int = 0) -> Metric:
    async with engine:
        t0 = time.perf_counter()
        worker = engine.worker(concurrency=sizes.concurrency, prefetch=prefetch)
        stats = await worker.drain(timeout=sizes.child_deadline)
        seconds = time.perf_counter() - t0
    if stats.completed != n:
        raise BenchError(f"drain completed {stats.completed} jobs, expected {n}: {stats}")
    return rate_metric(n, seconds, concurrency=sizes.concurrency)


def _fill(job: JobDefinition[Ping], sizes: Sizes, *, timed: bool) -> Metric | None:
    """Enqueue ``sizes.drain`` jobs; the first ``sizes.bulk`` in one (timed) call."""
    if sizes.drain < sizes.bulk:
        raise BenchError("sizes.drain must be >= sizes.bulk")
    payloads = [Ping(i, NOTE) for i in range(sizes.bulk)]
    t0 = time.perf_counter()
    job.enqueue_many(payloads)
    seconds = time.perf_counter() - t0
    if sizes.drain > sizes.bulk:
        job.enqueue_many([Ping(i, NOTE) for i in range(sizes.drain - sizes.bulk)])
    return rate_metric(sizes.bulk, seconds) if timed else None


def _bulk_and_drain_once(
    url: str,
    sizes: Sizes,
    *,
    sync_handler: bool = False,
    time_bulk: bool = False,
    prefetch: int = 0,
) -> tuple[Metric | None, Metric]:
    """Fill a fresh store (timing the bulk enqueue if asked), then drain it (timed)."""
    engine, jobs = make_engine(url)
    _prepare(engine)
    try:
        bulk = _fill(jobs.noop_sync if sync_handler else jobs.noop, sizes, timed=time_bulk)
    finally:
        engine.close()
    return bulk, asyncio.run(_timed_drain(engine, sizes.drain, sizes, prefetch=prefetch))


#: PostgreSQL: the store's worker commits its own writes (claim, finish...) without waiting for
#: the WAL flush unless told otherwise; this makes them wait like every other commit, which is
#: how Procrastinate runs. A separate drain row measures it (equal durability).
DURABLE_WORKER = "worker_synchronous_commit=on"


def _bulk_and_drain(url_for: UrlFor, sizes: Sizes, *, durable_row: bool) -> dict[str, Metric]:
    bulks: list[Metric] = []
    drains: list[Metric] = []
    sync_drains: list[Metric] = []
    prefetch_drains: list[Metric] = []
    durable_drains: list[Metric] = []
    for rep in range(sizes.repeats):
        bulk, drain = _bulk_and_drain_once(url_for(f"drain_{rep}"), sizes, time_bulk=True)
        assert bulk is not None
        bulks.append(bulk)
        drains.append(drain)
        # The same with a plain `def` handler, which runs in the worker's thread pool.
        url = url_for(f"drain_sync_{rep}")
        sync_drains.append(_bulk_and_drain_once(url, sizes, sync_handler=True)[1])
        # The same with a prefetch buffer as big as the concurrency (opt-in).
        url = url_for(f"drain_prefetch_{rep}")
        prefetch_drains.append(_bulk_and_drain_once(url, sizes, prefetch=sizes.concurrency)[1])
        if durable_row:
            url = f"{url_for(f'drain_durable_{rep}')}&{DURABLE_WORKER}"
            durable_drains.append(_bulk_and_drain_once(url, sizes)[1])
    results = {
        "enqueue_bulk": best_of(bulks),
        "drain": best_of(drains),
        "drain_sync_handler": best_of(sync_drains),
        "drain_prefetch": {**best_of(prefetch_drains), "prefetch": sizes.concurrency},
    }
    if durable_drains:
        results["drain_durable_worker"] = {**best_of(durable_drains), "url_param": DURABLE_WORKER}
    return results


# -- pickup latency --------------------------------------------------------------------------------


def _latency_in_process(sizes: Sizes) -> Metric:
    """Memory store: the worker runs in this process's event loop; a thread produces."""
    recorder = Recorder(expect=sizes.latency)
    engine, jobs = make_engine("memory://", recorder)
    errors: list[BaseException] = []

    def producer() -> None:
        def wait_ready() -> None:
            if not recorder.ready.wait(30):
                raise BenchError("the worker did not run the warm-up job within 30s")

        try:
            produce(
                lambda ns, warm: jobs.stamp.enqueue(Stamp(ns, warm)),
                count=sizes.latency,
                gap=sizes.latency_gap,
                wait_ready=wait_ready,
            )
        except BaseException as exc:
            errors.append(exc)
            recorder.done.set()

    async def main() -> None:
        async with engine:
            worker = engine.worker(concurrency=sizes.concurrency)
            recorder.on_done = worker.stop
            run = asyncio.ensure_future(worker.run())
            thread = threading.Thread(target=producer, name="bench-producer", daemon=True)
            thread.start()
            try:
                await asyncio.to_thread(recorder.done.wait, sizes.child_deadline)
                worker.stop()
                await asyncio.wait_for(run, timeout=30)
            finally:
                if not run.done():
                    worker.stop(grace=0)
                    await asyncio.gather(run, return_exceptions=True)
                await asyncio.to_thread(thread.join, 30)

    try:
        asyncio.run(main())
    finally:
        engine.close()
    if errors:
        raise BenchError(f"latency producer failed: {errors[0]!r}") from errors[0]
    if len(recorder.samples_ns) != sizes.latency:
        got = len(recorder.samples_ns)
        raise BenchError(f"got {got} latency samples, expected {sizes.latency}")
    return latency_metric(
        recorder.samples_ns, worker="same process, producer thread (sync enqueue)"
    )


def _latency_cross_process(url: str, sizes: Sizes, workdir: Path, wake: str) -> Metric:
    """SQLite/PostgreSQL/Redis: the worker is a child process; this process produces (sync
    enqueue).

    ``wake`` says how the store tells the idle worker about a new job (for the report).
    """
    engine, jobs = make_engine(url)
    _prepare(engine)
    out, ready = workdir / "dispatch_latency.json", workdir / "dispatch_ready"
    log = workdir / "dispatch_worker.log"
    args = [
        "worker",
        "--url",
        url,
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
    try:
        with child_process("bench.dispatch_side", args, log) as proc:
            produce(
                lambda ns, warm: jobs.stamp.enqueue(Stamp(ns, warm)),
                count=sizes.latency,
                gap=sizes.latency_gap,
                wait_ready=lambda: wait_for_path(ready, timeout=60, proc=proc, log_path=log),
            )
            finish_child(proc, timeout=30, log_path=log)
    finally:
        engine.close()
    data: dict[str, Any] = json.loads(out.read_text())
    samples: list[int] = data["samples_ns"]
    if len(samples) != sizes.latency:
        raise BenchError(f"got {len(samples)} latency samples, expected {sizes.latency}")
    return latency_metric(
        samples, worker=f"another process (python -m bench.dispatch_side worker), {wake}"
    )


# -- the whole system ------------------------------------------------------------------------------


#: How each store wakes an idle worker in another process.
_WAKE = {
    "sqlite": "PRAGMA data_version watcher",
    "postgres": "LISTEN/NOTIFY",
    "redis": "pub/sub (PUBLISH <prefix>:wake)",
}


def run_dispatch(store: str, sizes: Sizes, workdir: Path) -> dict[str, Metric]:
    """Every measurement for one Dispatch store (``"memory"``, ``"sqlite"``, ``"postgres"``,
    ``"redis"``)."""
    results: dict[str, Metric] = {}
    with _stores(store, workdir) as url_for:
        results.update(_enqueue_single(url_for, sizes))
        results.update(_bulk_and_drain(url_for, sizes, durable_row=store == "postgres"))
        if store == "memory":
            results["pickup_latency"] = _latency_in_process(sizes)
        else:
            url = url_for("latency")
            results["pickup_latency"] = _latency_cross_process(url, sizes, workdir, _WAKE[store])
    return results


# -- the worker child process ----------------------------------------------------------------------


def _worker_main(args: argparse.Namespace) -> int:
    recorder = Recorder(expect=args.expect, ready_path=Path(args.ready))
    engine, _ = make_engine(args.url, recorder)

    async def main() -> None:
        async with engine:
            worker = engine.worker(concurrency=args.concurrency)
            recorder.on_done = worker.stop
            loop = asyncio.get_running_loop()
            # Never outlive a parent that forgot us.
            loop.call_later(args.deadline, lambda: worker.stop(grace=0))
            await worker.run(install_signal_handlers=True)

    asyncio.run(main())
    recorder.dump(Path(args.out))
    if len(recorder.samples_ns) != args.expect:
        print(f"worker stopped with {len(recorder.samples_ns)}/{args.expect} samples", flush=True)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch_side")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run an idle worker that records pickup latencies")
    worker.add_argument("--url", required=True)
    worker.add_argument("--expect", type=int, required=True)
    worker.add_argument("--out", required=True)
    worker.add_argument("--ready", required=True)
    worker.add_argument("--concurrency", type=int, default=10)
    worker.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args(argv)
    return _worker_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
