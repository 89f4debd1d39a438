"""Spans: the producer span around each enqueue, the consumer span around each attempt, and
the workflow run and step spans."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from dispatch_core.middleware import (
    TRACING,
    DriveOutcome,
    DriveResult,
    MiddlewareRegistry,
    RunCall,
    StepCall,
)
from dispatch_plugins.otel import _conventions as c

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from dispatch_core import JobContext
    from dispatch_core.models import NewJob

__all__ = ["Tracing", "record_error", "end_consumer"]

Attributes = dict[str, AttributeValue]

#: Seconds between two looks for a global provider while there is none.
_RECHECK = 1.0

#: Extracted parent contexts kept (by the headers they came from).
_EXTRACTED_MAX = 256


def record_error(span: Span, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc``: an exception event, ``error.type`` and ERROR status."""
    span.record_exception(exc)
    span.set_attribute(c.ERROR_TYPE, type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def end_consumer(span: Span, token: object, error: BaseException | None) -> None:
    """End a span from :meth:`Tracing.start_consumer`, failed by ``error`` if given."""
    otel_context.detach(token)  # type: ignore[arg-type]
    if error is not None:
        record_error(span, error)
    span.end()


class _ProducerSpan:
    """Holds the producer span current around the store write, then ends it."""

    __slots__ = ("_context", "_span", "_token")

    def __init__(self, span: Span, ctx: Context) -> None:
        self._span = span
        self._context = ctx
        self._token: object = None

    def __enter__(self) -> None:
        # Spans of an instrumented database driver become children of the producer span.
        self._token = otel_context.attach(self._context)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]
        if exc is not None:
            record_error(self._span, exc)
        self._span.end()


class Tracing:
    """The tracing half of :class:`~dispatch_plugins.otel.OTel`.

    Args:
        tracer_provider: Where spans go; ``None`` uses the global provider (resolved when
            spans are made, so a provider set up after this object still receives them).
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        from dispatch_plugins.otel._version import VERSION

        self.tracer = trace.get_tracer(c.SCOPE, VERSION, tracer_provider)
        #: While no global provider is set, look again at most every _RECHECK seconds.
        self._recheck_at = 0.0
        self._provider = tracer_provider
        self._live = tracer_provider is not None and not isinstance(
            tracer_provider, trace.NoOpTracerProvider
        )
        # Attributes shared by every span of a (job name, queue), built once.
        self._send: dict[tuple[str, str], tuple[str, Attributes]] = {}
        self._process: dict[tuple[str, str], tuple[str, Attributes]] = {}
        self._extracted: dict[tuple[tuple[str, str], ...], Context] = {}

    def live(self) -> bool:
        """Whether spans go anywhere: false while the global provider is the API's no-op (or
        proxy) one, so an application without the SDK pays next to nothing. A global provider
        set later is noticed within a second; once set, the answer is kept."""
        if self._live:
            return True
        if self._provider is not None:
            return False  # an explicit no-op provider
        now = time.monotonic()
        if now < self._recheck_at:
            return False
        self._recheck_at = now + _RECHECK
        provider = trace.get_tracer_provider()
        if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            return False
        self._live = True
        return True

    # -- registration ----------------------------------------------------------------------------

    def register(self, registry: MiddlewareRegistry) -> None:
        """Add the workflow run and step middleware (the job middleware is shared with the
        metrics: see :func:`~dispatch_plugins.otel._middleware.job_middleware`)."""
        registry.add_run("otel.tracing", self.drive, order=TRACING)
        registry.add_step("otel.tracing", self.step, order=TRACING)

    # -- producer ---------------------------------------------------------------------------------

    def enqueuing(self, jobs: Sequence[NewJob]) -> _ProducerSpan | None:
        """Start the producer span of ``jobs`` (one write), stamp its context on each job's
        headers, and return the context manager the engine holds around the write."""
        if not jobs or not self.live():
            return None
        first = jobs[0]
        cron = first.headers.get(c.CRON_HEADER)
        if cron is not None:
            name, attributes = self._cron_span(first, cron)
        else:
            name, attributes = self._send_span(jobs)
        span = self.tracer.start_span(name, kind=SpanKind.PRODUCER, attributes=attributes)
        ctx = trace.set_span_in_context(span)
        # Every job of the write carries the same context: inject once, copy it.
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=ctx)
        if carrier:
            for job in jobs:
                job.headers.update(carrier)
        return _ProducerSpan(span, ctx)

    def _send_span(self, jobs: Sequence[NewJob]) -> tuple[str, Attributes]:
        first = jobs[0]
        key = (first.name, first.queue)
        cached = self._send.get(key)
        if cached is None:
            cached = self._send[key] = (
                f"send {first.queue}",
                {
                    c.MESSAGING_SYSTEM: c.SYSTEM,
                    c.MESSAGING_DESTINATION_NAME: first.queue,
                    c.MESSAGING_OPERATION_TYPE: "send",
                    c.MESSAGING_OPERATION_NAME: "send",
                    c.JOB_NAME: first.name,
                },
            )
        name, base = cached
        attributes = dict(base)
        if len(jobs) == 1:
            attributes[c.MESSAGING_MESSAGE_ID] = first.id
        else:
            attributes[c.MESSAGING_BATCH_MESSAGE_COUNT] = len(jobs)
            if any(job.queue != first.queue for job in jobs):
                name = "send"
                del attributes[c.MESSAGING_DESTINATION_NAME]
            if any(job.name != first.name for job in jobs):
                del attributes[c.JOB_NAME]
        if first.tenant is not None:
            attributes[c.TENANT] = first.tenant
        if first.name == c.DRIVER_JOB:
            run_id = _run_id(first.payload)
            if run_id is not None:
                attributes[c.WORKFLOW_RUN_ID] = run_id
        return name, attributes

    @staticmethod
    def _cron_span(job: NewJob, entry: str) -> tuple[str, Attributes]:
        attributes: Attributes = {
            c.MESSAGING_SYSTEM: c.SYSTEM,
            c.MESSAGING_DESTINATION_NAME: job.queue,
            c.MESSAGING_OPERATION_TYPE: "send",
            c.MESSAGING_OPERATION_NAME: "cron",
            c.MESSAGING_MESSAGE_ID: job.id,
            c.JOB_NAME: job.name,
            c.CRON_ENTRY: entry,
        }
        tick = job.headers.get(c.CRON_TICK_HEADER)
        if tick is not None:
            attributes[c.CRON_TICK] = tick
        if job.tenant is not None:
            attributes[c.TENANT] = job.tenant
        return f"cron {entry}", attributes

    # -- consumer ---------------------------------------------------------------------------------

    def start_consumer(self, ctx: JobContext) -> tuple[Span, object] | None:
        """Start the consumer span of one attempt, child of (and linked to) the producer span
        whose context the job's headers carry, and make it current. Returns the span and the
        token :func:`end_consumer` needs (``None`` when spans go nowhere)."""
        if not self.live():
            return None
        job = ctx.job
        parent = self._parent(job.headers)
        producer = trace.get_current_span(parent).get_span_context()
        key = (job.name, job.queue)
        cached = self._process.get(key)
        if cached is None:
            cached = self._process[key] = (
                f"process {job.queue}",
                {
                    c.MESSAGING_SYSTEM: c.SYSTEM,
                    c.MESSAGING_DESTINATION_NAME: job.queue,
                    c.MESSAGING_OPERATION_TYPE: "process",
                    c.MESSAGING_OPERATION_NAME: "process",
                    c.JOB_NAME: job.name,
                },
            )
        name, base = cached
        # The sampler sees the attributes shared by the job's (name, queue); the per-job ones
        # are set only on a span that records, so an unsampled job costs little.
        span = self.tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=base,
            links=(Link(producer),) if producer.is_valid else None,
        )
        if span.is_recording():
            attributes: Attributes = {
                c.MESSAGING_MESSAGE_ID: job.id,
                c.JOB_ATTEMPT: job.attempt,
                c.MESSAGING_CLIENT_ID: ctx.worker_id,
            }
            if job.tenant is not None:
                attributes[c.TENANT] = job.tenant
            if job.name == c.DRIVER_JOB:
                run_id = _run_id(job.payload)
                if run_id is not None:
                    attributes[c.WORKFLOW_RUN_ID] = run_id
            span.set_attributes(attributes)
        return span, otel_context.attach(trace.set_span_in_context(span, parent))

    def _parent(self, headers: dict[str, str]) -> Context:
        """The context the producer stamped on ``headers`` (empty when none). The jobs of one
        batch carry the same headers: the last few extractions are kept."""
        if not headers:
            return Context()
        key = tuple(headers.items())
        found = self._extracted.get(key)
        if found is None:
            if len(self._extracted) >= _EXTRACTED_MAX:
                self._extracted.clear()
            found = self._extracted[key] = propagate.extract(headers)
        return found

    # -- workflows --------------------------------------------------------------------------------

    async def drive(
        self, call: RunCall, call_next: Callable[[RunCall], Awaitable[DriveResult]]
    ) -> DriveResult:
        """Run middleware: one span per drive of a run, under the driver job's span."""
        if not self.live():
            return await call_next(call)
        run = call.run
        attributes: Attributes = {
            c.WORKFLOW_NAME: run.name,
            c.WORKFLOW_RUN_ID: run.id,
            c.WORKFLOW_VERSION: run.version,
        }
        if run.tenant is not None:
            attributes[c.TENANT] = run.tenant
        span = self.tracer.start_span(
            f"workflow {run.name}", kind=SpanKind.INTERNAL, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            result = await call_next(call)
        except asyncio.CancelledError:
            otel_context.detach(token)
            span.end()
            raise
        except BaseException as exc:
            otel_context.detach(token)
            record_error(span, exc)
            span.end()
            raise
        otel_context.detach(token)
        span.set_attribute(c.WORKFLOW_OUTCOME, result.outcome.value)
        if result.outcome is DriveOutcome.FAILED:
            if result.exception is not None:
                record_error(span, result.exception)
            else:
                span.set_status(Status(StatusCode.ERROR, result.error))
        span.end()
        return result

    async def step(self, call: StepCall, call_next: Callable[[StepCall], Awaitable[Any]]) -> Any:
        """Step middleware: one span per attempt of a step, under the run's span."""
        if not self.live():
            return await call_next(call)
        span = self.tracer.start_span(
            f"step {call.name}",
            kind=SpanKind.INTERNAL,
            attributes={
                c.WORKFLOW_NAME: call.run.name,
                c.WORKFLOW_RUN_ID: call.run.id,
                c.WORKFLOW_STEP: call.name,
                c.WORKFLOW_STEP_ATTEMPT: call.attempt,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            return await call_next(call)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            record_error(span, exc)
            raise
        finally:
            otel_context.detach(token)
            span.end()


def _run_id(payload: Any) -> str | None:
    if isinstance(payload, dict):
        run_id = payload.get("run_id")
        if isinstance(run_id, str):
            return run_id
    return None
