"""The job middleware: the consumer span and the measurements of each attempt, in one frame
(each middleware frame costs every job a little)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from dispatch_core.middleware import CallNext, Middleware
from dispatch_plugins.otel._tracing import end_consumer

if TYPE_CHECKING:
    from dispatch_core import JobContext
    from dispatch_plugins.otel._metrics import Metrics
    from dispatch_plugins.otel._tracing import Tracing

__all__ = ["job_middleware"]


def job_middleware(
    tracing: Tracing | None, metrics: Metrics | None, *, histograms: bool = True
) -> Middleware:
    """The middleware for an engine: spans if ``tracing``, measurements if ``metrics`` (the
    two per-attempt histograms only with ``histograms``)."""

    async def otel_middleware(ctx: JobContext, call_next: CallNext) -> Any:
        job = ctx.job
        t0 = metrics.begin(job, histograms=histograms) if metrics is not None else None
        span_token = tracing.start_consumer(ctx) if tracing is not None else None
        outcome = "completed"
        error: BaseException | None = None
        try:
            return await call_next(ctx)
        except asyncio.CancelledError:
            # Shutdown or cancellation: the attempt is released or cancelled, not failed.
            outcome = "cancelled"
            raise
        except BaseException as exc:
            outcome = "failed"
            error = exc
            raise
        finally:
            if span_token is not None:
                end_consumer(*span_token, error)
            if metrics is not None and t0 is not None:
                metrics.end(job, t0, outcome, histograms=histograms)

    return otel_middleware
