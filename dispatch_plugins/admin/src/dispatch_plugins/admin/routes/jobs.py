"""``/v1/jobs``: list, count, enqueue, show, cancel and retry jobs, and find those no worker
runs."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from starlette.responses import Response

from dispatch_core import Engine, JobNotFoundError, JobState, UnknownJobError, tenant_scope
from dispatch_core.definition import JobDefinition
from dispatch_core.engine import EARLIEST_RUN_AT
from dispatch_core.errors import JobIdTakenError
from dispatch_core.models import Job, SortOrder, utcnow
from dispatch_plugins.admin.auth import Scope, Token
from dispatch_plugins.admin.errors import ApiError, invalid_request, option_not_allowed
from dispatch_plugins.admin.pagination import page_of, parse_preview
from dispatch_plugins.admin.routes._base import (
    MISSING,
    Call,
    Endpoints,
    json_response,
    page_response,
)

__all__ = ["endpoints", "get_visible_job", "check_enqueue"]

endpoints = Endpoints()

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
#: Names listed in the message of a refusal (the details list them all).
_LISTED = 20
#: Ten years: longer delays or timeouts are surely mistakes.
_MAX_SECONDS = 10 * 365 * 86400.0
_MAX_INT = 2**31 - 1


async def _cron_jobs(engine: Engine) -> frozenset[str]:
    """The names of the jobs cron entries run (declared here or stored by any process),
    resolved through aliases to the definitions' names."""
    named = {spec.job_name for spec in engine.cron_specs.values()}
    named.update(entry.job_name for entry in await engine.acron_entries())
    jobs = engine.jobs
    return frozenset(jobs[n].name if n in jobs else n for n in named)


def _may_enqueue(
    token: Token | None, definition: JobDefinition[Any], cron_jobs: frozenset[str]
) -> bool:
    """The enqueue policy for one definition (see ``docs/security.md``)."""
    if definition.internal:
        return False
    if token is None:
        return True
    if token.tenant is not None and (definition.operator_only or definition.name in cron_jobs):
        return False
    return token.may_enqueue(definition.name)


def _enqueueable(engine: Engine, token: Token | None, cron_jobs: frozenset[str]) -> list[str]:
    """The names of the jobs ``token`` may enqueue, sorted (aliases are not listed)."""
    definitions = {d.name: d for d in engine.jobs.values()}
    return sorted(n for n, d in definitions.items() if _may_enqueue(token, d, cron_jobs))


async def check_enqueue(engine: Engine, token: Token | None, name: str) -> None:
    """Refuse an enqueue of job ``name`` by ``token`` that the policy forbids.

    An operator token (no tenant) may enqueue every job that is not internal and that its
    ``enqueue`` allow-list matches; an unknown or internal name is ``422 unknown_job`` (the
    same answer for both), a name outside its allow-list ``403 job_not_allowed``. A tenant
    token may enqueue neither internal nor operator-only jobs; it gets ``403 job_not_allowed``
    for every name it may not enqueue, whatever the reason (unknown, internal, operator-only,
    outside its allow-list), so the answer tells it nothing of the jobs it may not use.

    Raises:
        UnknownJobError: (operator tokens) the name is unknown or internal.
        ApiError: 403 ``job_not_allowed``.
    """
    tenant_token = token is not None and token.tenant is not None
    # A tenant token's check reads the cron entries whatever the name, so the time it takes
    # does not tell which names exist.
    cron_jobs = await _cron_jobs(engine) if tenant_token else frozenset()
    definition = engine.jobs.get(name)
    if not tenant_token and (definition is None or definition.internal):
        # Reported as any unknown name: internal jobs are not part of the application's API.
        raise UnknownJobError(name, _enqueueable(engine, token, cron_jobs))
    if definition is not None and _may_enqueue(token, definition, cron_jobs):
        return
    assert token is not None  # a token-less call may enqueue every known, non-internal job
    allowed = _enqueueable(engine, token, cron_jobs)
    listed = ", ".join(allowed[:_LISTED]) or "none"
    if len(allowed) > _LISTED:
        listed += f" and {len(allowed) - _LISTED} more"
    if tenant_token:
        # Never says whether the name exists, nor why it is refused.
        message = (
            f"token {token.name!r} may not enqueue {name!r}: it is not one of the jobs this "
            f"token may enqueue ({listed})"
        )
    else:
        patterns = ", ".join(token.enqueue or ())
        message = (
            f"token {token.name!r} may not enqueue job {name!r}: its enqueue allow-list "
            f"({patterns}) does not match it; it may enqueue: {listed}"
        )
    raise ApiError(403, "job_not_allowed", message, {"field": "name", "allowed": allowed})


async def get_visible_job(call: Call, job_id: str) -> Job:
    """The job, if the caller's tenant may see it (else the same 404 as an unknown id)."""
    job = await call.engine.aget_job(job_id)
    if not call.visible(job.tenant):
        raise JobNotFoundError(job_id)
    return job


@endpoints.get("/jobs", Scope.JOBS_READ)
async def list_jobs(call: Call) -> Response:
    """Jobs, newest first by default, filtered by state, queue, name (and tenant), with
    previews of long payloads and results (``GET /jobs/{id}`` gives them whole)."""
    query = call.query("state", "queue", "name", "tenant", "preview", page=True)
    request = query.page(SortOrder.DESC)
    jobs = await call.engine.alist_jobs(
        state=query.choice("state", JobState),
        queue=query.text("queue"),
        name=query.text("name"),
        tenant=call.tenant_filter(query.text("tenant")),
        limit=request.limit + 1,
        after=request.after,
        order=request.order,
        preview=parse_preview(query.params),
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


def _confine_options(token: Token, definition: JobDefinition[Any], options: dict[str, Any]) -> None:
    """Hold a tenant token's enqueue options to what its tenant may choose in queues that
    tenants share (see ``docs/security.md``), adjusting ``options`` in place.

    Raises:
        ApiError: 403 ``option_not_allowed`` for a ``job_id`` (ids are global: a chosen one
            would tell whether another tenant's job has it, or take it from that tenant), a
            ``queue`` other than the job's own, or a ``priority`` above the job's.
    """
    if options["job_id"] is not None:
        raise option_not_allowed(
            "job_id",
            f"token {token.name!r} is bound to a tenant and may not choose job_id: job ids are "
            "shared by every tenant; give unique_key instead, which dedupes within the tenant",
            use="unique_key",
        )
    queue = options["queue"]
    if queue is not None and queue != definition.queue:
        raise option_not_allowed(
            "queue",
            f"token {token.name!r} is bound to a tenant and may enqueue {definition.name!r} "
            f"only in its own queue {definition.queue!r}, not {queue!r}",
            allowed=[definition.queue],
        )
    priority = options["priority"]
    if priority is not None and priority > definition.priority:
        raise option_not_allowed(
            "priority",
            f"token {token.name!r} is bound to a tenant and may not raise the priority of "
            f"{definition.name!r} above its own ({definition.priority}); got {priority}",
            maximum=definition.priority,
        )
    run_at = options["run_at"]
    now = utcnow()
    if run_at is not None and run_at < now:
        # A past run_at means "now"; earlier would only put the job ahead of those waiting.
        options["run_at"] = now


@endpoints.post("/jobs", Scope.JOBS_WRITE)
async def enqueue_job(call: Call) -> Response:
    """Enqueue a job (201), or return the job an equal ``unique_key``/``job_id`` names (200).

    A tenant token may not choose ``job_id``, a ``queue`` other than the job's or a
    ``priority`` above the job's (403 ``option_not_allowed``), and its past ``run_at`` is
    taken as now. ``run_at`` is at most ten years ahead, as ``delay``.
    """
    call.query()
    body = await call.body(*_ENQUEUE_FIELDS)
    name = body.text("name", required=True)
    assert name is not None
    await check_enqueue(call.engine, call.token, name)
    options: dict[str, Any] = {
        "queue": body.text("queue"),
        "priority": body.integer("priority", minimum=-_MAX_INT, maximum=_MAX_INT),
        "delay": body.number("delay", minimum=0, maximum=_MAX_SECONDS),
        "run_at": body.datetime(
            "run_at",
            earliest=EARLIEST_RUN_AT,
            latest=utcnow() + timedelta(seconds=_MAX_SECONDS),
        ),
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
    if call.token is not None and call.token.tenant is not None:
        _confine_options(call.token, call.engine.jobs[name], options)
    options = {k: v for k, v in options.items() if v is not None}
    payload = body.json("payload")
    args = () if payload is MISSING else (payload,)
    tenant = call.tenant_filter(body.text("tenant"))
    started = utcnow()
    try:
        with tenant_scope(tenant):
            job = await call.engine.aenqueue(name, *args, **options)
    except JobIdTakenError:
        # Unique keys are scoped by tenant, ids are not: another tenant's job has this id (only
        # operator tokens choose ids). Nothing was enqueued, and nothing of that job is shown.
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
