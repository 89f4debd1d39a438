"""``/v1/jobs``: list, count, enqueue, show, cancel and retry jobs, and find those no worker
runs."""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import Response

from dispatch_core import JobNotFoundError, JobState, UnknownJobError, tenant_scope
from dispatch_core.errors import JobIdTakenError
from dispatch_core.models import Job, SortOrder, utcnow
from dispatch_plugins.admin.auth import Scope
from dispatch_plugins.admin.errors import ApiError, invalid_request
from dispatch_plugins.admin.pagination import page_of
from dispatch_plugins.admin.routes._base import (
    MISSING,
    Call,
    Endpoints,
    json_response,
    page_response,
)

__all__ = ["endpoints", "get_visible_job", "INTERNAL_JOB_PREFIX"]

endpoints = Endpoints()

#: Jobs named so are Dispatch's own (the workflow driver...): not for enqueueing by hand,
#: since their payloads address runs by id across tenants.
INTERNAL_JOB_PREFIX = "dispatch."
_JOB_ID = re.compile(r"[!-~]{1,200}")
_ENQUEUE_FIELDS = (
    "name",
    "payload",
    "queue",
    "priority",
    "delay",
    "run_at",
    "unique_key",
    "max_retries",
    "timeout",
    "job_id",
    "tenant",
)
#: Ten years: longer delays or timeouts are surely mistakes.
_MAX_SECONDS = 10 * 365 * 86400.0
_MAX_INT = 2**31 - 1


async def get_visible_job(call: Call, job_id: str) -> Job:
    """The job, if the caller's tenant may see it (else the same 404 as an unknown id)."""
    job = await call.engine.aget_job(job_id)
    if not call.visible(job.tenant):
        raise JobNotFoundError(job_id)
    return job


@endpoints.get("/jobs", Scope.JOBS_READ)
async def list_jobs(call: Call) -> Response:
    """Jobs, newest first by default, filtered by state, queue, name (and tenant)."""
    query = call.query("state", "queue", "name", "tenant", page=True)
    request = query.page(SortOrder.DESC)
    jobs = await call.engine.alist_jobs(
        state=query.choice("state", JobState),
        queue=query.text("queue"),
        name=query.text("name"),
        tenant=call.tenant_filter(query.text("tenant")),
        limit=request.limit + 1,
        after=request.after,
        order=request.order,
    )
    return page_response(page_of(jobs, request, lambda j: j.id))


@endpoints.get("/jobs/counts", Scope.JOBS_READ)
async def count_jobs(call: Call) -> Response:
    """Jobs by state, every state present."""
    query = call.query("queue", "tenant")
    counts = await call.engine.acount_jobs(
        queue=query.text("queue"), tenant=call.tenant_filter(query.text("tenant"))
    )
    return json_response({state.value: counts.get(state, 0) for state in JobState})


@endpoints.get("/jobs/unhandled", Scope.JOBS_READ)
async def list_unhandled_jobs(call: Call) -> Response:
    """Runnable jobs that no running worker takes, counted by queue and name (a short summary,
    not a page: one row per queue and name)."""
    query = call.query("tenant")
    rows = await call.engine.aunhandled_jobs(tenant=call.tenant_filter(query.text("tenant")))
    return json_response({"items": rows})


@endpoints.post("/jobs", Scope.JOBS_WRITE)
async def enqueue_job(call: Call) -> Response:
    """Enqueue a job (201), or return the job an equal ``unique_key``/``job_id`` names (200)."""
    call.query()
    body = await call.body(*_ENQUEUE_FIELDS)
    name = body.text("name", required=True)
    assert name is not None
    if name.startswith(INTERNAL_JOB_PREFIX):
        # Reported like any unknown name: these are not part of the application's API.
        raise UnknownJobError(name, [n for n in call.engine.jobs if not _internal(n)])
    options: dict[str, Any] = {
        "queue": body.text("queue"),
        "priority": body.integer("priority", minimum=-_MAX_INT, maximum=_MAX_INT),
        "delay": body.number("delay", minimum=0, maximum=_MAX_SECONDS),
        "run_at": body.datetime("run_at"),
        "unique_key": body.text("unique_key"),
        "max_retries": body.integer("max_retries", minimum=0, maximum=1000),
        "timeout": body.number("timeout", minimum=0, maximum=_MAX_SECONDS, exclusive_minimum=True),
        "job_id": body.text("job_id"),
    }
    if options["delay"] is not None and options["run_at"] is not None:
        raise invalid_request("give delay or run_at, not both", "delay")
    if options["job_id"] is not None:
        if not _JOB_ID.fullmatch(options["job_id"]):
            raise invalid_request(
                "job_id must be 1 to 200 printable ASCII characters without spaces", "job_id"
            )
        if options["unique_key"] is not None:
            raise invalid_request("give job_id or unique_key, not both", "job_id")
    options = {k: v for k, v in options.items() if v is not None}
    payload = body.json("payload")
    args = () if payload is MISSING else (payload,)
    tenant = call.tenant_filter(body.text("tenant"))
    started = utcnow()
    try:
        with tenant_scope(tenant):
            job = await call.engine.aenqueue(name, *args, **options)
    except JobIdTakenError:
        # Unique keys are scoped by tenant, ids are not: another tenant's job has this id.
        # Nothing was enqueued, and nothing of that job is shown.
        raise _conflict("job_id", "job_id is already the id of another job") from None
    if not call.visible(job.tenant):
        # Defence in depth: stores scope unique keys (and so chosen ids) by tenant, so a key
        # never matches another tenant's job; if one ever did, it must not be shown.
        field = "job_id" if "job_id" in options else "unique_key"
        raise _conflict(field, f"{field} is already used by a job this token cannot see")
    # A new job was created now; one made before this request is the one a unique_key or
    # job_id matched. (Stores keep microseconds, so the comparison is exact.)
    created = job.created_at >= started
    return json_response(job, 201 if created else 200)


def _conflict(field: str, message: str) -> ApiError:
    return ApiError(409, "conflict", f"{message}; choose another", {"field": field})


def _internal(name: str) -> bool:
    return name.startswith(INTERNAL_JOB_PREFIX)


@endpoints.get("/jobs/{job_id}", Scope.JOBS_READ)
async def get_job(call: Call) -> Response:
    """One job."""
    call.query()
    return json_response(await get_visible_job(call, call.path("job_id")))


@endpoints.post("/jobs/{job_id}/cancel", Scope.JOBS_WRITE)
async def cancel_job(call: Call) -> Response:
    """Cancel a pending, retrying or running job; 409 when it has finished."""
    call.query()
    await call.body()
    job = await get_visible_job(call, call.path("job_id"))
    return json_response(await call.engine.acancel(job.id))


@endpoints.post("/jobs/{job_id}/retry", Scope.JOBS_WRITE)
async def retry_job(call: Call) -> Response:
    """Send a failed or cancelled job back to pending; 409 otherwise."""
    call.query()
    await call.body()
    job = await get_visible_job(call, call.path("job_id"))
    return json_response(await call.engine.aretry(job.id))
