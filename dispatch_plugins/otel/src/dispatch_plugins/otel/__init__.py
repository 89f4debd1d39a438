"""dispatch-otel: OpenTelemetry traces and metrics for Dispatch.

One trace from the request that enqueued a job to the attempt that ran it (in whatever
process), cron-fire and workflow run/step spans, and job counters, histograms and gauges.
Installing the distribution registers a default :class:`OTel` on the global providers; pass
your own to an engine to choose the providers::

    engine = Engine(url, plugins=[OTel(tracer_provider=tp, meter_provider=mp)])
"""

from __future__ import annotations

from dispatch_plugins.otel._conventions import SCOPE
from dispatch_plugins.otel._metrics import DURATION_BUCKETS
from dispatch_plugins.otel._otel import PLUGIN_NAME, OTel

__all__ = ["OTel", "PLUGIN_NAME", "SCOPE", "DURATION_BUCKETS"]
