"""``/v1/stats``: the dashboard's overview in one call: job counts, dead letters, throughput,
the jobs no running worker takes, and (for operator tokens) queues and workers."""

from __future__ import annotations

import time
import weakref
from datetime import timedelta

import attrs
from starlette.responses import Response

from dispatch_core import Engine, JobState, WorkerState
from dispatch_core.models import RunnableCount, utcnow
from dispatch_plugins.admin.auth import Scope
from dispatch_plugins.admin.errors import invalid_request
from dispatch_plugins.admin.routes._base import Call, Endpoints, json_response

__all__ = [
    "endpoints",
    "MAX_WINDOW",
    "MIN_BUCKET",
    "MAX_BUCKETS",
    "UNHANDLED_TTL",
    "UNHANDLED_COST_FACTOR",
]

endpoints = Endpoints()

MAX_WINDOW = 7 * 86400
MIN_BUCKET = 10
MAX_BUCKETS = 1000
#: Seconds ``/v1/stats`` reuses a tenant's unhandled-jobs rows, at least. The dashboard polls
#: every 2 s per open tab, and the rows cost a worker listing plus a grouped count of every
#: runnable job (the store contract plans for about one call a minute; with 100,000 runnable
#: jobs it took 140 ms on SQLite and 630 ms on Redis here); a job that would otherwise wait
#: forever is reported a few seconds late at worst. ``/v1/jobs/unhandled`` is always fresh.
UNHANDLED_TTL = 10.0
#: And at least this many times as long as computing them took, so that on a slow store (a huge
#: backlog) they cost at most 1/20 of its time however many tabs poll.
UNHANDLED_COST_FACTOR = 20

#: The clock of the cache (monotonic; tests move it).
_clock = time.monotonic


@attrs.frozen(kw_only=True)
class _Cached:
    expires: float
    rows: list[RunnableCount]


#: Per engine, per tenant (``None``: every tenant), the last unhandled-jobs rows.
_unhandled: weakref.WeakKeyDictionary[Engine, dict[str | None, _Cached]] = (
    weakref.WeakKeyDictionary()
)


async def _unhandled_jobs(engine: Engine, tenant: str | None) -> list[RunnableCount]:
    """``engine.aunhandled_jobs(tenant=tenant)``, reused for a while (see
    :data:`UNHANDLED_TTL`)."""
    cache = _unhandled.setdefault(engine, {})
    started = _clock()
    hit = cache.get(tenant)
    if hit is not None and hit.expires > started:
        return hit.rows
    rows = await engine.aunhandled_jobs(tenant=tenant)
    now = _clock()
    # Operators may name any tenant: drop what expired so the cache stays small.
    for key in [k for k, v in cache.items() if v.expires <= now]:
        del cache[key]
    ttl = max(UNHANDLED_TTL, UNHANDLED_COST_FACTOR * (now - started))
    cache[tenant] = _Cached(expires=now + ttl, rows=rows)
    return rows


@endpoints.get("/stats", Scope.STATS_READ)
async def get_stats(call: Call) -> Response:
    """Counts by state, the dead-letter count, throughput over ``window`` seconds in buckets
    of ``bucket`` seconds, the runnable jobs no running worker takes (by queue and name, some
    seconds old: see :data:`UNHANDLED_TTL`), and for operators the queues and the workers."""
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
        "unhandled": await _unhandled_jobs(engine, tenant),
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
