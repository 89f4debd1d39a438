"""The processes of the cross-process trace test (run as scripts by ``test_two_process``).

Each configures the OpenTelemetry SDK globally, as an application would, and relies on the
entry-point default of dispatch-otel: nothing is passed to the engine.

``python _otel_procs.py producer URL SPANS``: serve ``GET /orders`` on a real HTTP server
(a SERVER span, then an enqueue), call it once, print the job id, exit.
``python _otel_procs.py worker URL SPANS``: drain the store, exit.

Both write the spans they finished to ``SPANS`` as JSON lines.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import sys
import threading
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from dispatch_core import Engine


class JsonLinesExporter(SpanExporter):
    """Appends each finished span to a file, one JSON object a line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.path.open("a") as out:
            for span in spans:
                out.write(json.dumps(span_dict(span)) + "\n")
        return SpanExportResult.SUCCESS


def span_dict(span: ReadableSpan) -> dict[str, Any]:
    assert span.context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": format(span.context.trace_id, "032x"),
        "span_id": format(span.context.span_id, "016x"),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
        "parent_remote": span.parent.is_remote if span.parent else None,
        "links": [
            {
                "trace_id": format(link.context.trace_id, "032x"),
                "span_id": format(link.context.span_id, "016x"),
            }
            for link in span.links
        ],
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
    }


def setup(spans: Path) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(spans)))
    trace.set_tracer_provider(provider)
    return provider


def make_engine(url: str) -> Engine:
    engine = Engine(url)

    @engine.job(name="orders.ship", queue="shipping")
    async def ship(order_id: int) -> None:
        with trace.get_tracer("shop").start_as_current_span("pack parcel"):
            return None

    return engine


def producer(url: str, spans: Path) -> None:
    provider = setup(spans)
    engine = make_engine(url)
    tracer = trace.get_tracer("shop.web")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parent = propagate.extract(dict(self.headers))
            with tracer.start_as_current_span(
                "GET /orders",
                context=parent,
                kind=trace.SpanKind.SERVER,
                attributes={"http.request.method": "GET", "url.path": self.path},
            ):
                job = engine.enqueue("orders.ship", 42)
            body = job.id.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/orders", timeout=30) as response:
            print(response.read().decode())
    finally:
        server.shutdown()
        server.server_close()
        engine.close()
        provider.shutdown()


def worker(url: str, spans: Path) -> None:
    provider = setup(spans)
    engine = make_engine(url)

    async def main() -> None:
        async with engine:
            stats = await engine.drain(timeout=30)
            assert stats.completed == 1, stats

    try:
        asyncio.run(main())
    finally:
        engine.close()
        provider.shutdown()


if __name__ == "__main__":
    role, store_url, path = sys.argv[1:4]
    {"producer": producer, "worker": worker}[role](store_url, Path(path))
