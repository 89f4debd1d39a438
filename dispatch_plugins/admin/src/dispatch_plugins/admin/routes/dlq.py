"""``/v1/dlq``: list, count, show, replay and purge dead-letter entries."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from starlette.responses import Response

from dispatch_core import DispatchError, DLQEntryNotFoundError
from dispatch_core.models import DLQEntry, SortOrder
from dispatch_plugins.admin.auth import Scope
from dispatch_plugins.admin.errors import to_api_error
from dispatch_plugins.admin.pagination import page_of, parse_preview
from dispatch_plugins.admin.routes._base import (
    Call,
    Endpoints,
    Query,
    json_response,
    page_response,
)

__all__ = ["endpoints"]

endpoints = Endpoints()

_MAX_REPLAY = 1000
_MAX_PURGE = 10_000


class _Flag(enum.StrEnum):
    """A boolean query parameter's spellings."""

    TRUE = "true"
    FALSE = "false"


async def _get_visible_entry(call: Call, entry_id: str) -> DLQEntry:
    entry = await call.engine.aget_dlq(entry_id)
    if not call.visible(entry.tenant):
        raise DLQEntryNotFoundError(entry_id)
    return entry


def _replayed(query: Query) -> bool | None:
    """``?replayed=true|false``: only replayed entries, or only those never replayed."""
    flag = query.choice("replayed", _Flag)
    return None if flag is None else flag is _Flag.TRUE


def _before(query: Query) -> datetime | None:
    """``?before=<ISO 8601>``: only entries that failed before it."""
    return query.datetime("before")


@endpoints.get("/dlq", Scope.DLQ_READ)
async def list_dlq(call: Call) -> Response:
    """Dead-letter entries, oldest failure first by default, with previews of long payloads
    (``GET /dlq/{id}`` gives them whole)."""
    query = call.query("queue", "name", "tenant", "replayed", "preview", page=True)
    request = query.page(SortOrder.ASC)
    entries = await call.engine.alist_dlq(
        queue=query.text("queue"),
        name=query.text("name"),
        tenant=call.tenant_filter(query.text("tenant")),
        replayed=_replayed(query),
        limit=request.limit + 1,
        after=request.after,
        order=request.order,
        preview=parse_preview(query.params),
    )
    return page_response(page_of(entries, request, lambda e: e.id))


@endpoints.get("/dlq/count", Scope.DLQ_READ)
async def count_dlq(call: Call) -> Response:
    """How many entries the dead-letter queue holds (replayed or not, failed before...)."""
    query = call.query("queue", "tenant", "replayed", "before")
    count = await call.engine.acount_dlq(
        queue=query.text("queue"),
        tenant=call.tenant_filter(query.text("tenant")),
        replayed=_replayed(query),
        before=_before(query),
    )
    return json_response({"count": count})


@endpoints.post("/dlq/replay", Scope.DLQ_WRITE)
async def replay_dlq_entries(call: Call) -> Response:
    """Replay the given entries, or the oldest entries not yet replayed."""
    call.query()
    body = await call.body("ids", "queue", "limit", "tenant")
    ids = body.text_list("ids", max_items=_MAX_REPLAY)
    queue = body.text("queue")
    limit = body.integer("limit", minimum=1, maximum=_MAX_REPLAY) or 100
    tenant = call.tenant_filter(body.text("tenant"))
    if ids is not None:
        targets = list(dict.fromkeys(ids))
    else:
        # Entries already replayed stay in the queue (stamped): the oldest unreplayed ones.
        # Only the ids are needed: preview=0 leaves every payload in the store.
        oldest = await call.engine.alist_dlq(
            queue=queue,
            tenant=tenant,
            replayed=False,
            limit=limit,
            order=SortOrder.ASC,
            preview=0,
        )
        targets = [e.id for e in oldest]
    replayed: list[dict[str, str]] = []
    errors: list[dict[str, Any]] = []
    for entry_id in targets:
        try:
            await _get_visible_entry(call, entry_id)
            job = await call.engine.areplay_dlq(entry_id)
        except DispatchError as exc:
            error = to_api_error(exc)
            if error is None or error.status == 503:
                raise  # a store outage fails the request, not one entry
            errors.append({"entry_id": entry_id, "code": error.code, "message": error.message})
        else:
            replayed.append({"entry_id": entry_id, "job_id": job.id})
    # What this call replayed is stamped now, so no longer counted.
    remaining = await call.engine.acount_dlq(queue=queue, tenant=tenant, replayed=False)
    return json_response({"replayed": replayed, "errors": errors, "remaining": remaining})


@endpoints.get("/dlq/{entry_id}", Scope.DLQ_READ)
async def get_dlq_entry(call: Call) -> Response:
    """One dead-letter entry."""
    call.query()
    return json_response(await _get_visible_entry(call, call.path("entry_id")))


@endpoints.post("/dlq/{entry_id}/replay", Scope.DLQ_WRITE)
async def replay_dlq_entry(call: Call) -> Response:
    """Enqueue a fresh copy of the entry's job (201, the new job)."""
    call.query()
    await call.body()
    entry = await _get_visible_entry(call, call.path("entry_id"))
    return json_response(await call.engine.areplay_dlq(entry.id), 201)


@endpoints.post("/dlq/purge", Scope.DLQ_WRITE)
async def purge_dlq(call: Call) -> Response:
    """Delete up to ``limit`` entries that failed before ``before``, oldest first."""
    call.query()
    body = await call.body("before", "queue", "limit", "tenant")
    before = body.datetime("before", required=True)
    assert before is not None
    queue = body.text("queue")
    limit = body.integer("limit", minimum=1, maximum=_MAX_PURGE) or 1000
    tenant = call.tenant_filter(body.text("tenant"))
    purged = await call.engine.apurge_dlq(before=before, queue=queue, tenant=tenant, limit=limit)
    remaining = 0
    if purged >= limit:  # fewer than the limit deleted: none was left to delete
        remaining = await call.engine.acount_dlq(queue=queue, tenant=tenant, before=before)
    return json_response({"purged": purged, "remaining": remaining})
