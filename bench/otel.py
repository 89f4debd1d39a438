"""The cost of dispatch-otel: ``python -m bench --only otel [--quick]``.

The drain benchmark (``sizes.drain`` no-op jobs enqueued in bulk, then drained by a worker
of concurrency ``sizes.concurrency``, timed) on SQLite and PostgreSQL, three ways in one
run, each on a fresh store:

* ``none``: no plugin at all (``load_entrypoints=False``);
* ``api``: dispatch-otel with only the OpenTelemetry API, no SDK: the no-op providers;
* ``traces``: the SDK's tracing alone (every job sampled), no metrics;
* ``lean``: what a busy deployment would run: traces sampled at 10 % (``ParentBased`` over
  ``TraceIdRatioBased(0.1)``, decided at the producer) and the counters and gauges, without
  the two per-attempt histograms (``OTel(histograms=False)``);
* ``sdk``: everything on: every job traced, every metric recorded.

The SDK variants use a ``TracerProvider`` with a ``BatchSpanProcessor`` feeding an exporter
that drops the spans, and a ``MeterProvider`` with a periodic reader feeding an exporter
that drops the points (every span and point is still made). Jobs are enqueued in batches of
50, so the producer spans (the roots the sampler decides on) number ``drain / 50``.

Repeats are interleaved (none, api, sdk, none, ...) so drift on the machine hits all three
alike; the best run of each is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from bench.common import FULL, QUICK, REPO_ROOT, BenchError, Metric, Sizes, best_of, rate_metric
from bench.report import finish_meta, machine_meta, write_json
from dispatch_core import Engine
from dispatch_plugins.otel import OTel

__all__ = ["VARIANTS", "STORES", "run_otel", "render", "main"]

DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "otel.json"

#: Column -> what it is.
VARIANTS = {
    "none": "no plugin",
    "api": "API only",
    "traces": "SDK traces",
    "lean": "lean: 10% + counters",
    "sdk": "SDK, all on",
}
#: Jobs per enqueue call (one producer span each).
BATCH = 50
STORES = ("sqlite", "postgres")
#: The loss of throughput with the SDK on that the plugin aims to stay under.
TARGET_LOSS = 0.15


class _DropSpans(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _DropPoints(MetricExporter):
    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


@contextlib.contextmanager
def _plugins(variant: str) -> Iterator[list[object]]:
    """The ``plugins=`` of a variant; SDK providers are shut down afterwards."""
    if variant == "none":
        yield []
    elif variant == "api":
        # No providers given and none configured globally: the API's no-op ones.
        yield [OTel()]
    elif variant in ("traces", "lean", "sdk"):
        sampler = ParentBased(TraceIdRatioBased(0.1)) if variant == "lean" else None
        tracer_provider = TracerProvider(sampler=sampler)
        tracer_provider.add_span_processor(BatchSpanProcessor(_DropSpans()))
        reader = PeriodicExportingMetricReader(_DropPoints(), export_interval_millis=5_000)
        meter_provider = MeterProvider(metric_readers=[reader])
        try:
            yield [
                OTel(
                    tracer_provider=tracer_provider,
                    meter_provider=meter_provider,
                    metrics=variant != "traces",
                    histograms=variant == "sdk",
                )
            ]
        finally:
            tracer_provider.shutdown()
            meter_provider.shutdown()
    else:
        raise ValueError(f"unknown variant {variant!r}")


def _store_plugin(url: str) -> object:
    """The store's plugin module: entry points are off, so no other plugin comes along."""
    import importlib

    scheme = "sqlite" if url.startswith("sqlite") else "postgres"
    return importlib.import_module(f"dispatch_plugins.{scheme}.plugin")


def _drain_once(url: str, sizes: Sizes, plugins: list[object]) -> Metric:
    engine = Engine(url, load_entrypoints=False, plugins=[_store_plugin(url), *plugins])

    @engine.job(name="bench.noop", max_retries=0)
    async def noop(payload: int) -> None:
        return None

    async def run() -> Metric:
        async with engine:
            n, chunk = sizes.drain, BATCH
            for start in range(0, n, chunk):
                await noop.aenqueue_many(list(range(start, min(start + chunk, n))))
            # The enqueue's own lifecycle hooks (out of band) are not part of the drain.
            await engine.hooks.flush()
            t0 = time.perf_counter()
            worker = engine.worker(concurrency=sizes.concurrency)
            stats = await worker.drain(timeout=sizes.child_deadline)
            seconds = time.perf_counter() - t0
        if stats.completed != n:
            raise BenchError(f"drain completed {stats.completed} jobs, expected {n}: {stats}")
        return rate_metric(n, seconds, concurrency=sizes.concurrency)

    try:
        return asyncio.run(run())
    finally:
        engine.close()


@contextlib.contextmanager
def _url_for(store: str, workdir: Path) -> Iterator[Callable[[str], str]]:
    if store == "sqlite":
        yield lambda name: f"sqlite:///{workdir / name}.db"
    else:
        from bench.services import PgSchemas

        with PgSchemas() as schemas:
            yield schemas.url


def run_otel(store: str, sizes: Sizes, workdir: Path) -> dict[str, Metric]:
    """The drain rate of each variant on ``store``, best of ``sizes.repeats`` (interleaved)."""
    runs: dict[str, list[Metric]] = {v: [] for v in VARIANTS}
    with _url_for(store, workdir) as url_for:
        for rep in range(sizes.repeats):
            for variant in VARIANTS:
                with _plugins(variant) as plugins:
                    url = url_for(f"otel_{variant}_{rep}")
                    runs[variant].append(_drain_once(url, sizes, plugins))
    results = {variant: best_of(found) for variant, found in runs.items()}
    base = float(results["none"]["rate"])
    for variant in VARIANTS:
        rate = float(results[variant]["rate"])
        results[variant]["ratio_to_none"] = round(rate / base, 3) if base else None
    return results


def render(report: dict[str, Any]) -> str:
    """A table: one line per store, a column per variant, then the ratios."""
    meta = report["meta"]
    sizes = meta["sizes"]
    quick = " (--quick: tiny sizes, numbers are not meaningful)" if meta["quick"] else ""
    lines = [
        f"dispatch-otel overhead{quick}",
        f"machine: nproc={meta['nproc']}  {meta['python']}  SQLite {meta['sqlite']}  "
        f"{meta['platform']}",
        f"drain {sizes['drain']:,} no-op jobs, c={sizes['concurrency']}, jobs/s, best of "
        f"{sizes['repeats']} (interleaved), a fresh store each",
        "",
    ]
    width = 12
    col = 22
    header = "".ljust(width) + "".join(label.rjust(col) for label in VARIANTS.values())
    lines += [header, "-" * len(header)]
    verdicts: list[str] = []
    for store, entry in report["stores"].items():
        if entry.get("error"):
            lines.append(f"{store.ljust(width)}ERROR: {entry['error'].splitlines()[0]}")
            continue
        metrics = entry["metrics"]
        rates = "".join(f"{metrics[v]['rate']:,.0f} jobs/s".rjust(col) for v in VARIANTS)
        ratios = "".join(f"{metrics[v]['ratio_to_none']:.2f}x".rjust(col) for v in VARIANTS)
        lines += [f"{store.ljust(width)}{rates}", f"{'  vs none'.ljust(width)}{ratios}"]
        base_us = 1e6 / float(metrics["none"]["rate"])
        for variant in ("api", "traces", "lean", "sdk"):
            rate = float(metrics[variant]["rate"])
            loss = 1 - rate / float(metrics["none"]["rate"])
            extra = 1e6 / rate - base_us
            ok = "PASS" if loss <= TARGET_LOSS else "FAIL"
            verdicts.append(
                f"{store} {VARIANTS[variant]}: {loss:+.1%} throughput lost, {extra:+.0f} us per "
                f"job over {base_us:.0f} us (target <= {TARGET_LOSS:.0%} lost)  {ok}"
            )
    lines += ["", *verdicts, "", f"elapsed: total {report['elapsed_s']:.1f}s"]
    return "\n".join(lines)


def main(*, quick: bool, out: Path | None = None, stores: Sequence[str] = STORES) -> int:
    """Run every store, print the table, write the JSON report; 1 if a store failed."""
    sizes = QUICK if quick else FULL
    sizes = Sizes(**{**vars(sizes), "repeats": max(sizes.repeats, 3)})
    meta = machine_meta(sizes, quick=quick, systems=list(stores))
    for dist in ("dispatch-otel", "opentelemetry-api", "opentelemetry-sdk"):
        meta["versions"][dist] = importlib.metadata.version(dist)
    report: dict[str, Any] = {"meta": meta, "stores": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dispatch-bench-otel-") as tmp:
        for store in stores:
            print(f"[bench] otel on {store} ...", file=sys.stderr, flush=True)
            entry: dict[str, Any] = {"metrics": {}, "error": None}
            t0 = time.perf_counter()
            workdir = Path(tmp) / store
            workdir.mkdir()
            try:
                entry["metrics"] = run_otel(store, sizes, workdir)
            except Exception as exc:
                import traceback

                traceback.print_exc(file=sys.stderr)
                entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["elapsed_s"] = round(time.perf_counter() - t0, 2)
            report["stores"][store] = entry
    report["elapsed_s"] = round(time.perf_counter() - started, 2)
    finish_meta(report["meta"])
    print(render(report))
    path = out or DEFAULT_OUT
    write_json(report, path)
    print(f"\nJSON written to {path}")
    return 1 if any(e["error"] for e in report["stores"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main(quick="--quick" in sys.argv, stores=STORES))
