"""Operator routes about the whole cluster: ``/v1/queues``, ``/v1/workers``, ``/v1/cron``.

Queues, workers and cron entries belong to no tenant, so only operator tokens (bound to no
tenant) reach them.
"""

from __future__ import annotations

from starlette.responses import Response

from dispatch_core import QueueStats
from dispatch_core.models import SortOrder
from dispatch_plugins.admin.auth import Scope
from dispatch_plugins.admin.pagination import paginate
from dispatch_plugins.admin.routes._base import Call, Endpoints, json_response, page_response

__all__ = ["endpoints"]

endpoints = Endpoints()


async def _queue_stats(call: Call, name: str) -> QueueStats:
    for stats in await call.engine.aqueues():
        if stats.name == name:
            return stats
    # A queue with no job and no limits yet: the store may list it only once it has a row.
    return QueueStats(
        name=name, config=None, paused=False, depth=0, running=0, completed_last_minute=0
    )


@endpoints.get("/queues", Scope.QUEUES_READ, operator_only=True)
async def list_queues(call: Call) -> Response:
    """Every queue with its limits, pause flag, depth and recent rate, by name."""
    request = call.query(page=True).page(SortOrder.ASC)
    return page_response(paginate(await call.engine.aqueues(), request, lambda q: q.name))


@endpoints.post("/queues/{name}/pause", Scope.QUEUES_WRITE, operator_only=True)
async def pause_queue(call: Call) -> Response:
    """Pause a queue: workers claim none of its jobs until it is resumed."""
    call.query()
    await call.body()
    name = call.path("name")
    await call.engine.apause_queue(name)
    return json_response(await _queue_stats(call, name))


@endpoints.post("/queues/{name}/resume", Scope.QUEUES_WRITE, operator_only=True)
async def resume_queue(call: Call) -> Response:
    """Resume a paused queue."""
    call.query()
    await call.body()
    name = call.path("name")
    await call.engine.aresume_queue(name)
    return json_response(await _queue_stats(call, name))


@endpoints.get("/workers", Scope.WORKERS_READ, operator_only=True)
async def list_workers(call: Call) -> Response:
    """Registered workers (oldest first by default) and the current leader."""
    request = call.query(page=True).page(SortOrder.ASC)
    workers = await call.engine.aworkers()
    leader = await call.engine.aleader()
    return page_response(paginate(workers, request, lambda w: w.id), leader=leader)


@endpoints.get("/cron", Scope.CRON_READ, operator_only=True)
async def list_cron(call: Call) -> Response:
    """Every cron entry, by name."""
    request = call.query(page=True).page(SortOrder.ASC)
    return page_response(paginate(await call.engine.acron_entries(), request, lambda c: c.name))


@endpoints.get("/cron/{name}", Scope.CRON_READ, operator_only=True)
async def get_cron(call: Call) -> Response:
    """One cron entry."""
    call.query()
    return json_response(await call.engine.aget_cron(call.path("name")))


@endpoints.post("/cron/{name}/trigger", Scope.CRON_WRITE, operator_only=True)
async def trigger_cron(call: Call) -> Response:
    """Enqueue the entry's job now, outside its schedule (201, the job)."""
    call.query()
    await call.body()
    return json_response(await call.engine.atrigger_cron(call.path("name")), 201)


@endpoints.post("/cron/{name}/enable", Scope.CRON_WRITE, operator_only=True)
async def enable_cron(call: Call) -> Response:
    """Enable an entry; its next tick is the first one from now."""
    call.query()
    await call.body()
    return json_response(await call.engine.aenable_cron(call.path("name")))


@endpoints.post("/cron/{name}/disable", Scope.CRON_WRITE, operator_only=True)
async def disable_cron(call: Call) -> Response:
    """Disable an entry: the leader stops firing it until it is enabled again."""
    call.query()
    await call.body()
    return json_response(await call.engine.adisable_cron(call.path("name")))
