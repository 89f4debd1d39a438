"""Helpers of the dispatch-otel tests: a real SDK per test (never the global providers).

The test modules put this directory on ``sys.path`` and import it by name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dispatch_core import Constant, Engine
from dispatch_core.stores import MemoryStore
from dispatch_plugins.otel import OTel


@attrs.define
class Telemetry:
    """An SDK tracer and meter provider recording in memory, and an :class:`OTel` on them."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    otel: OTel

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """Finished spans (of ``name``), in the order they ended."""
        found = list(self.exporter.get_finished_spans())
        return [s for s in found if name is None or s.name == name]

    def span(self, name: str) -> ReadableSpan:
        """The one finished span called ``name``."""
        found = self.spans(name)
        assert len(found) == 1, [s.name for s in self.spans()]
        return found[0]

    def points(self, metric: str) -> list[Any]:
        """The data points of ``metric`` in a fresh collection."""
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        if data is None:
            return found
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == metric:
                        found.extend(m.data.data_points)
        return found

    def by_attributes(self, metric: str) -> dict[frozenset[tuple[str, Any]], Any]:
        """``metric``'s points keyed by their attributes."""
        return {frozenset(p.attributes.items()): p for p in self.points(metric)}

    def value(self, metric: str, **attributes: Any) -> Any:
        """The value (or, for a histogram, the count) of the point whose attributes include
        ``attributes`` (dots spelled ``__``); 0 when none."""
        wanted = {k.replace("__", "."): v for k, v in attributes.items()}
        total = 0
        for point in self.points(metric):
            if all(point.attributes.get(k) == v for k, v in wanted.items()):
                total += getattr(point, "value", None) or getattr(point, "count", 0)
        return total


def make_telemetry(**options: Any) -> Telemetry:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    otel = OTel(tracer_provider=tracer_provider, meter_provider=meter_provider, **options)
    return Telemetry(exporter, reader, tracer_provider, meter_provider, otel)


def make_engine(tel: Telemetry, store: Any = None, **options: Any) -> Engine:
    """A memory engine with only ``tel.otel`` as plugin and retries without delay."""
    return Engine(
        store if store is not None else MemoryStore(),
        load_entrypoints=False,
        plugins=[tel.otel],
        backoff=Constant(interval=0),
        **options,
    )


async def wait_for(
    predicate: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float = 5.0
) -> None:
    """Poll ``predicate`` (sync or async) until true."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
