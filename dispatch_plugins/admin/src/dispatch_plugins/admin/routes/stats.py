"""``/v1/stats``: the dashboard's overview in one call: job counts, dead letters, throughput,
and (for operator tokens) queues and workers."""

from __future__ import annotations

from datetime import timedelta

from starlette.responses import Response

from dispatch_core import JobState, WorkerState
from dispatch_core.models import utcnow
from dispatch_plugins.admin.auth import Scope
from dispatch_plugins.admin.errors import invalid_request
from dispatch_plugins.admin.routes._base import Call, Endpoints, json_response

__all__ = ["endpoints", "MAX_WINDOW", "MIN_BUCKET", "MAX_BUCKETS"]

endpoints = Endpoints()

MAX_WINDOW = 7 * 86400
MIN_BUCKET = 10
MAX_BUCKETS = 1000


@endpoints.get("/stats", Scope.STATS_READ)
async def get_stats(call: Call) -> Response:
    """Counts by state, the dead-letter count, throughput over ``window`` seconds in buckets
    of ``bucket`` seconds, and for operators the queues and the workers."""
    query = call.query("window", "bucket", "tenant")
    window = query.integer("window", default=3600, minimum=MIN_BUCKET, maximum=MAX_WINDOW)
    bucket = query.integer("bucket", default=60, minimum=MIN_BUCKET, maximum=MAX_WINDOW)
    if bucket > window:
        raise invalid_request(f"bucket ({bucket}) must not exceed window ({window})", "bucket")
    if -(-window // bucket) > MAX_BUCKETS:
        raise invalid_request(
            f"window / bucket must be at most {MAX_BUCKETS} buckets, got {-(-window // bucket)}",
            "bucket",
        )
    tenant = call.tenant_filter(query.text("tenant"))
    engine = call.engine
    counts = await engine.acount_jobs(tenant=tenant)
    throughput = await engine.athroughput(
        since=utcnow() - timedelta(seconds=window), bucket=timedelta(seconds=bucket), tenant=tenant
    )
    stats = {
        "jobs": {state.value: counts.get(state, 0) for state in JobState},
        "dlq": await engine.acount_dlq(tenant=tenant),
        "throughput": throughput,
        "queues": None,
        "workers": None,
    }
    if call.tenant is None:  # cluster-wide figures are for operators only
        workers = await engine.aworkers()
        stats["queues"] = sorted(await engine.aqueues(), key=lambda q: q.name)
        stats["workers"] = {
            "running": sum(1 for w in workers if w.state is WorkerState.RUNNING),
            "leader": await engine.aleader(),
        }
    return json_response(stats)
