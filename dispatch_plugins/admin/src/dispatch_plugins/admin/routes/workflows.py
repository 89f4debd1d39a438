"""``/v1/workflows``, ``/v1/runs`` and ``/v1/events``: definitions, runs and their
timelines, starting, cancelling and replaying runs, and sending events."""

from __future__ import annotations

from starlette.responses import Response

from dispatch_core import ConfigurationError, PayloadError, RunNotFoundError, RunState, tenant_scope
from dispatch_core.models import SortOrder
from dispatch_core.workflows.models import TERMINAL_RUN_STATES, WorkflowRun
from dispatch_plugins.admin.auth import Scope
from dispatch_plugins.admin.errors import ApiError, invalid_request, not_found
from dispatch_plugins.admin.pagination import page_of, paginate, parse_preview
from dispatch_plugins.admin.routes._base import (
    MISSING,
    Call,
    Endpoints,
    json_response,
    page_response,
)

__all__ = ["endpoints"]

endpoints = Endpoints()


async def _get_visible_run(call: Call, run_id: str) -> WorkflowRun:
    run = await call.engine.aget_run(run_id)
    if not call.visible(run.tenant):
        raise RunNotFoundError(run_id)
    return run


@endpoints.get("/workflows", Scope.WORKFLOWS_READ)
async def list_workflows(call: Call) -> Response:
    """The workflows this process registers (latest versions), by name."""
    query = call.query(page=True)
    request = query.page(SortOrder.ASC)
    definitions = [
        {"name": d.name, "version": d.version, "queue": d.queue}
        for d in call.engine.workflows.values()
    ]
    return page_response(paginate(definitions, request, lambda d: str(d["name"])))


@endpoints.post("/workflows/{name}/runs", Scope.WORKFLOWS_WRITE)
async def start_run(call: Call) -> Response:
    """Start a run of the workflow (201, the run) in the caller's tenant."""
    call.query()
    name = call.path("name")
    definition = call.engine.workflows.get(name)
    if definition is None:
        raise not_found(f"workflow {name!r} is not registered")
    body = await call.body("input", "correlation_key", "tenant")
    raw = body.json("input")
    correlation_key = body.text("correlation_key")
    tenant = call.tenant_filter(body.text("tenant"))
    try:
        with tenant_scope(tenant):
            handle = await definition.astart(
                None if raw is MISSING else raw, tenant=tenant, correlation_key=correlation_key
            )
    except PayloadError:
        raise
    except ConfigurationError as exc:  # "takes no input"
        raise ApiError(
            422, "invalid_payload", str(exc), {"path": "$", "problems": [str(exc)]}
        ) from None
    return json_response(await call.engine.aget_run(handle.id), 201)


@endpoints.get("/runs", Scope.WORKFLOWS_READ)
async def list_runs(call: Call) -> Response:
    """Runs, newest first by default, filtered by state and workflow name (and tenant), with
    previews of long inputs and outputs (``GET /runs/{id}`` gives them whole)."""
    query = call.query("state", "name", "tenant", "preview", page=True)
    request = query.page(SortOrder.DESC)
    runs = await call.engine.alist_runs(
        state=query.choice("state", RunState),
        name=query.text("name"),
        tenant=call.tenant_filter(query.text("tenant")),
        limit=request.limit + 1,
        after=request.after,
        order=request.order,
        preview=parse_preview(query.params),
    )
    return page_response(page_of(runs, request, lambda r: r.id))


@endpoints.get("/runs/{run_id}", Scope.WORKFLOWS_READ)
async def get_run(call: Call) -> Response:
    """One run."""
    call.query()
    return json_response(await _get_visible_run(call, call.path("run_id")))


@endpoints.get("/runs/{run_id}/timeline", Scope.WORKFLOWS_READ)
async def get_timeline(call: Call) -> Response:
    """A run and its history: every step, sleep and wait."""
    call.query()
    run = await _get_visible_run(call, call.path("run_id"))
    steps = await call.engine.atimeline(run.id)
    return json_response({"run": run, "steps": steps})


@endpoints.post("/runs/{run_id}/cancel", Scope.WORKFLOWS_WRITE)
async def cancel_run(call: Call) -> Response:
    """Cancel an unfinished run; 409 when it has finished."""
    call.query()
    await call.body()
    run = await _get_visible_run(call, call.path("run_id"))
    return json_response(await call.engine.acancel_run(run.id))


@endpoints.post("/runs/{run_id}/replay", Scope.WORKFLOWS_WRITE)
async def replay_run(call: Call) -> Response:
    """Run a finished run again from a step, as a new run (201)."""
    call.query()
    body = await call.body("from_step")
    from_step = body.text("from_step", required=True)
    assert from_step is not None
    run = await _get_visible_run(call, call.path("run_id"))
    if run.state not in TERMINAL_RUN_STATES:
        raise ApiError(
            409,
            "invalid_state",
            f"workflow run {run.id!r} is {run.state.value}: only a finished run can be replayed",
            {"state": run.state.value},
        )
    steps = await call.engine.atimeline(run.id)
    if not any(s.name == from_step for s in steps):
        raise invalid_request(f"workflow run {run.id!r} has no step {from_step!r}", "from_step")
    return json_response(await call.engine.areplay_run(run.id, from_step), 201)


@endpoints.post("/events", Scope.EVENTS_WRITE)
async def send_event(call: Call) -> Response:
    """Send an event to a run, or to every unfinished run of a correlation key (202)."""
    call.query()
    body = await call.body("name", "payload", "run_id", "correlation_key", "tenant")
    name = body.text("name", required=True)
    assert name is not None
    payload = body.json("payload")
    run_id = body.text("run_id")
    correlation_key = body.text("correlation_key")
    tenant = call.tenant_filter(body.text("tenant"))
    if (run_id is None) == (correlation_key is None):
        raise invalid_request("give run_id or correlation_key (exactly one)", "run_id")
    if run_id is not None:
        # The event belongs to the run's tenant (an operator token may address any run).
        run = await _get_visible_run(call, run_id)
        if "tenant" in body and tenant != run.tenant:
            raise RunNotFoundError(run_id)
        tenant = run.tenant
    run_ids = await call.engine.asend_event(
        name,
        None if payload is MISSING else payload,
        run_id=run_id,
        correlation_key=correlation_key,
        tenant=tenant,
    )
    return json_response({"run_ids": run_ids}, 202)
