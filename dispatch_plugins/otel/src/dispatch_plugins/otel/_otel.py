"""The :class:`OTel` plugin object."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from dispatch_core.hookspecs import hookimpl
from dispatch_core.middleware import TRACING
from dispatch_core.models import Job, NewJob
from dispatch_plugins.otel._metrics import Metrics
from dispatch_plugins.otel._middleware import job_middleware
from dispatch_plugins.otel._tracing import Tracing

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from dispatch_core import Engine
    from dispatch_core.middleware import MiddlewareRegistry

__all__ = ["OTel", "PLUGIN_NAME"]

#: The name an :class:`OTel` object registers under: the entry point's name, so an object
#: passed in ``plugins=`` takes the place of the default the entry point would load.
PLUGIN_NAME: Final = "otel"

_TRACING_HOOKS = ("dispatch_job_enqueuing",)
_METRICS_HOOKS = (
    "dispatch_engine_started",
    "dispatch_engine_shutdown",
    "dispatch_job_enqueued",
    "dispatch_job_failed",
    "dispatch_job_retrying",
    "dispatch_job_dead_lettered",
    "dispatch_job_rescued",
    "dispatch_cron_fired",
)


class OTel:
    """OpenTelemetry traces and metrics for every job, cron fire and workflow of an engine.

    Pass it to the engine, ``Engine(url, plugins=[OTel(...)])``; it then replaces the default
    instance that installing dispatch-otel registers (which uses the global providers). Its
    middleware is registered when the engine is built, so register it through ``plugins=``,
    not ``engine.register_plugin`` (which would add the producer spans and the counters but
    no consumer spans).

    Args:
        tracer_provider: Where spans go; ``None`` uses the global tracer provider.
        meter_provider: Where measurements go; ``None`` uses the global meter provider.
        traces: Make spans (producer, consumer, workflow run and step).
        metrics: Record the job counters, histograms and gauges. Objects on the same meter
            provider share their instruments (and totals).
        histograms: Record the two per-attempt histograms (``dispatch.job.duration`` and
            ``dispatch.job.queue_latency``). Each costs every attempt an SDK call (about
            10 µs here); ``False`` keeps the counters and gauges, which cost next to nothing.
        queue_depth_interval: Seconds between two reads of the queue depths from the store
            (only while something collects the gauge); ``None`` turns the gauge off.

    Example:
        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> engine = Engine("sqlite:///jobs.db", plugins=[OTel(tracer_provider=TracerProvider())])
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        traces: bool = True,
        metrics: bool = True,
        histograms: bool = True,
        queue_depth_interval: float | None = 5.0,
    ) -> None:
        #: pluggy registers an object under its ``__name__``.
        self.__name__ = PLUGIN_NAME
        self.tracing = Tracing(tracer_provider) if traces else None
        self.metrics = Metrics.for_provider(meter_provider) if metrics else None
        self.histograms = histograms
        self.queue_depth_interval = queue_depth_interval
        # Every implemented lifecycle hook costs the engine an out-of-band call per event,
        # useful or not: hide the hooks of a half that is off (pluggy skips a None attribute).
        off = (_TRACING_HOOKS if self.tracing is None else ()) + (
            _METRICS_HOOKS if self.metrics is None else ()
        )
        for name in off:
            self.__dict__[name] = None

    def __repr__(self) -> str:
        return f"OTel(traces={self.tracing is not None}, metrics={self.metrics is not None})"

    def hook_functions(self) -> dict[str, Callable[..., Any]]:
        """This object's hook implementations by hook name (what pluggy would register)."""
        found: dict[str, Callable[..., Any]] = {}
        for name in dir(type(self)):
            if name.startswith("dispatch_"):
                fn = getattr(self, name)
                if fn is not None and hasattr(fn, "dispatch_impl"):
                    found[name] = fn
        return found

    # -- registration -----------------------------------------------------------------------------

    @hookimpl
    def dispatch_register_middleware(self, registry: MiddlewareRegistry) -> None:
        """Add the job middleware (spans and measurements of each attempt, in one frame) and
        the workflow run and step middleware."""
        if self.tracing is None and self.metrics is None:
            return
        registry.add(
            "otel",
            job_middleware(self.tracing, self.metrics, histograms=self.histograms),
            order=TRACING,
        )
        if self.tracing is not None:
            self.tracing.register(registry)

    # -- producer ---------------------------------------------------------------------------------

    @hookimpl
    def dispatch_job_enqueuing(self, jobs: Sequence[NewJob]) -> AbstractContextManager[None] | None:
        """The producer span around the write; its context goes into each job's headers."""
        assert self.tracing is not None
        return self.tracing.enqueuing(jobs)

    # -- lifecycle --------------------------------------------------------------------------------

    @hookimpl
    def dispatch_engine_started(self, engine: Engine) -> None:
        """Start reading the queue depths."""
        assert self.metrics is not None
        # With the API alone (no SDK) nothing would collect the gauge: no task at all.
        if self.queue_depth_interval is not None and self.metrics.live():
            self.metrics.start_polling(engine, self.queue_depth_interval)

    @hookimpl
    def dispatch_engine_shutdown(self, engine: Engine) -> None:
        """Stop reading the queue depths."""
        assert self.metrics is not None
        self.metrics.stop_polling(engine)

    @hookimpl
    def dispatch_job_enqueued(self, job: Job) -> None:
        """Count ``dispatch.jobs.enqueued``."""
        assert self.metrics is not None
        self.metrics.count("dispatch.jobs.enqueued", job)

    @hookimpl
    def dispatch_job_failed(self, job: Job) -> None:
        """Count ``dispatch.jobs.failed``."""
        assert self.metrics is not None
        self.metrics.count("dispatch.jobs.failed", job)

    @hookimpl
    def dispatch_job_retrying(self, job: Job, next_run_at: datetime) -> None:
        """Count ``dispatch.jobs.retried``."""
        assert self.metrics is not None
        self.metrics.count("dispatch.jobs.retried", job)

    @hookimpl
    def dispatch_job_dead_lettered(self, job: Job) -> None:
        """Count ``dispatch.jobs.dead_lettered``."""
        assert self.metrics is not None
        self.metrics.count("dispatch.jobs.dead_lettered", job)

    @hookimpl
    def dispatch_job_rescued(self, job: Job) -> None:
        """Count ``dispatch.jobs.rescued``."""
        assert self.metrics is not None
        self.metrics.count("dispatch.jobs.rescued", job)

    @hookimpl
    async def dispatch_cron_fired(self, job_id: str, engine: Engine) -> None:
        """Count the job of a scheduled cron fire in ``dispatch.jobs.enqueued``."""
        assert self.metrics is not None
        await self.metrics.cron_fired(job_id, engine)
