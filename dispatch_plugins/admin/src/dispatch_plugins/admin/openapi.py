"""The OpenAPI 3.1 document of the admin API.

The document is built from the endpoint table (:data:`~dispatch_plugins.admin.routes.
ENDPOINTS`): each endpoint's operation id, scope and security come from there, and its
parameters, body and responses from :data:`OPERATIONS` below, so that a route without a
description fails at once (and the tests check the rest against real responses).
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from dispatch_core import JobState, RunState
from dispatch_plugins.admin.openapi_schemas import (
    BOOLEAN,
    DATETIME,
    SCHEMAS,
    STRING,
    TEXT,
    Schema,
    enum_schema,
    ref,
)
from dispatch_plugins.admin.pagination import DEFAULT_LIMIT, LIST_PREVIEW, MAX_LIMIT, MAX_PREVIEW
from dispatch_plugins.admin.routes import ENDPOINTS

__all__ = ["openapi_document", "OPERATIONS", "SCHEMAS"]

_DESCRIPTIONS = {
    400: "The request is malformed (bad JSON, a bad parameter or field, named in details).",
    401: "No valid bearer token (or no token is configured).",
    403: "The token lacks the scope (forbidden), is bound to a tenant on an operator route "
    "(operator_only), may not enqueue the job name (job_not_allowed), or may not set an "
    "enqueue option (option_not_allowed).",
    404: "No such object (or it belongs to another tenant).",
    409: "The object is not in a state that allows this (invalid_state), or the unique_key or "
    "job_id is taken by a job the token cannot see (conflict).",
    413: "The body is larger than 10 MiB.",
    422: "The job or workflow does not accept the payload, or the job name is unknown.",
    503: "The store is unavailable.",
}


def _error(status: int) -> Schema:
    return {
        "description": _DESCRIPTIONS[status],
        "content": {"application/json": {"schema": ref("Error")}},
    }


def _ok(schema: str, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}


def _param(name: str, where: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
    }


def _path(name: str, description: str) -> Schema:
    return _param(name, "path", STRING, description)


def _query(name: str, schema: Schema, description: str) -> Schema:
    return _param(name, "query", schema, description)


def _paging(default_order: str) -> list[Schema]:
    return [
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
            "Most items in the page.",
        ),
        _query("cursor", STRING, "The next_cursor of the previous page."),
        _query(
            "order",
            {"type": "string", "enum": ["asc", "desc"], "default": default_order},
            "Order by id (creation time) or name.",
        ),
    ]


_TENANT = _query("tenant", TEXT, "Only this tenant's objects (operator tokens only).")
_QUEUE = _query("queue", TEXT, "Only this queue.")
_PREVIEW = _query(
    "preview",
    {"type": "integer", "minimum": 0, "maximum": MAX_PREVIEW, "default": LIST_PREVIEW},
    "Bytes of JSON a body is listed whole up to; a longer one is sent as null with "
    "<name>_truncated, <name>_preview (its first bytes) and <name>_size.",
)
_REPLAYED = _query(
    "replayed",
    BOOLEAN,
    "true: only entries replayed already (they stay, stamped); false: only those never replayed.",
)


def _body(schema: str, required: bool = True) -> Schema:
    return {"required": required, "content": {"application/json": {"schema": ref(schema)}}}


def _op(
    summary: str,
    responses: dict[int, Schema],
    errors: tuple[int, ...] = (),
    *,
    parameters: list[Schema] | None = None,
    body: Schema | None = None,
    tag: str,
    description: str | None = None,
) -> Schema:
    op: Schema = {"summary": summary, "tags": [tag]}
    if description is not None:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    op["responses"] = {
        str(k): v for k, v in sorted({**responses, **{e: _error(e) for e in errors}}.items())
    }
    return op


#: Errors every authenticated operation may answer.
_AUTHED = (400, 401, 403, 503)

#: ``(method, path)`` (relative to ``/v1``) -> the OpenAPI operation, minus what the endpoint
#: table gives (operationId, security, the required scope).
OPERATIONS: dict[tuple[str, str], Schema] = {
    ("GET", "/health/live"): _op(
        "Liveness probe", {200: _ok("Health", "The process serves requests.")}, tag="health"
    ),
    ("GET", "/health/ready"): _op(
        "Readiness probe",
        {200: _ok("Ready", "The store answers.")},
        (503,),
        tag="health",
    ),
    ("GET", "/openapi.json"): _op(
        "This document",
        {
            200: {
                "description": "The OpenAPI 3.1 document.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
        tag="meta",
    ),
    ("GET", "/jobs"): _op(
        "List jobs",
        {200: _ok("JobPage", "A page of jobs.")},
        _AUTHED,
        parameters=[
            _query("state", enum_schema(JobState), "Only jobs in this state."),
            _QUEUE,
            _query("name", TEXT, "Only jobs of this name."),
            _TENANT,
            _PREVIEW,
            *_paging("desc"),
        ],
        tag="jobs",
        description=(
            "Payloads and results longer than the preview length come as previews "
            "(payload_truncated, payload_preview, payload_size; the same for result); "
            "GET /jobs/{job_id} gives them whole."
        ),
    ),
    ("GET", "/jobs/counts"): _op(
        "Count jobs by state",
        {200: _ok("JobCounts", "Jobs by state, every state present.")},
        _AUTHED,
        parameters=[_QUEUE, _TENANT],
        tag="jobs",
    ),
    ("GET", "/jobs/unhandled"): _op(
        "Jobs no running worker takes",
        {
            200: _ok(
                "UnhandledJobs",
                "Runnable jobs (pending or retrying, due) that no running worker takes, counted "
                "by queue and name; empty when every waiting job has a worker. Usually a job "
                "defined in a module the workers do not import, or enqueued under an old name.",
            )
        },
        _AUTHED,
        parameters=[_TENANT],
        tag="jobs",
    ),
    ("POST", "/jobs"): _op(
        "Enqueue a job",
        {
            201: _ok("Job", "The new job."),
            200: _ok("Job", "The existing job that unique_key or job_id names."),
        },
        (*_AUTHED, 409, 422),
        body=_body("EnqueueRequest"),
        tag="jobs",
        description=(
            "Internal jobs (the engine's and plugins' own, such as the workflow driver and "
            "webhook deliveries) are never enqueued: an operator token gets 422 unknown_job, "
            "as for a name the server does not know. A tenant token gets 403 job_not_allowed "
            "for every name it may not enqueue (unknown, internal, operator-only, including "
            "the job of every cron entry, or outside its enqueue allow-list), without saying "
            "which; an operator token gets it for a job outside its allow-list. "
            "details.allowed lists the jobs the token may enqueue. A tenant token gets 403 "
            "option_not_allowed (details.field) for a job_id, a queue other than the job's "
            "own or a priority above the job's; its run_at in the past is taken as now. "
            "run_at is from 1970 to ten years ahead."
        ),
    ),
    ("GET", "/jobs/{job_id}"): _op(
        "Show a job",
        {200: _ok("Job", "The job.")},
        (*_AUTHED, 404),
        parameters=[_path("job_id", "The job id.")],
        tag="jobs",
    ),
    ("POST", "/jobs/{job_id}/cancel"): _op(
        "Cancel a job",
        {200: _ok("Job", "The cancelled job.")},
        (*_AUTHED, 404, 409),
        parameters=[_path("job_id", "The job id.")],
        tag="jobs",
    ),
    ("POST", "/jobs/{job_id}/retry"): _op(
        "Retry a failed or cancelled job",
        {200: _ok("Job", "The job, pending again.")},
        (*_AUTHED, 404, 409),
        parameters=[_path("job_id", "The job id.")],
        tag="jobs",
    ),
    ("GET", "/dlq"): _op(
        "List dead-letter entries",
        {200: _ok("DLQPage", "A page of entries.")},
        _AUTHED,
        parameters=[
            _QUEUE,
            _query("name", TEXT, "Only entries of this job name."),
            _TENANT,
            _REPLAYED,
            _PREVIEW,
            *_paging("asc"),
        ],
        tag="dlq",
        description=(
            "Payloads longer than the preview length come as previews (payload_truncated, "
            "payload_preview, payload_size); GET /dlq/{entry_id} gives them whole."
        ),
    ),
    ("GET", "/dlq/count"): _op(
        "Count dead-letter entries",
        {200: _ok("Count", "How many entries.")},
        _AUTHED,
        parameters=[
            _QUEUE,
            _TENANT,
            _REPLAYED,
            _query("before", DATETIME, "Only entries that failed before this time (ISO 8601)."),
        ],
        tag="dlq",
    ),
    ("POST", "/dlq/replay"): _op(
        "Replay dead-letter entries",
        {200: _ok("ReplayResult", "What was replayed, what failed, and how many remain.")},
        _AUTHED,
        body=_body("ReplayRequest", required=False),
        tag="dlq",
    ),
    ("GET", "/dlq/{entry_id}"): _op(
        "Show a dead-letter entry",
        {200: _ok("DLQEntry", "The entry.")},
        (*_AUTHED, 404),
        parameters=[_path("entry_id", "The entry id.")],
        tag="dlq",
    ),
    ("POST", "/dlq/{entry_id}/replay"): _op(
        "Replay one dead-letter entry",
        {201: _ok("Job", "The new job.")},
        (*_AUTHED, 404),
        parameters=[_path("entry_id", "The entry id.")],
        tag="dlq",
    ),
    ("POST", "/dlq/purge"): _op(
        "Purge old dead-letter entries",
        {200: _ok("PurgeResult", "How many were deleted, and how many older ones remain.")},
        _AUTHED,
        body=_body("PurgeRequest"),
        tag="dlq",
    ),
    ("GET", "/workflows"): _op(
        "List registered workflows",
        {200: _ok("WorkflowPage", "A page of workflow definitions.")},
        _AUTHED,
        parameters=_paging("asc"),
        tag="workflows",
    ),
    ("POST", "/workflows/{name}/runs"): _op(
        "Start a workflow run",
        {201: _ok("Run", "The new run.")},
        (*_AUTHED, 404, 422),
        parameters=[_path("name", "The workflow name.")],
        body=_body("StartRunRequest", required=False),
        tag="workflows",
    ),
    ("GET", "/runs"): _op(
        "List workflow runs",
        {200: _ok("RunPage", "A page of runs.")},
        _AUTHED,
        parameters=[
            _query("state", enum_schema(RunState), "Only runs in this state."),
            _query("name", TEXT, "Only runs of this workflow."),
            _TENANT,
            _PREVIEW,
            *_paging("desc"),
        ],
        tag="workflows",
        description=(
            "Inputs and outputs longer than the preview length come as previews "
            "(input_truncated, input_preview, input_size; the same for output); "
            "GET /runs/{run_id} gives them whole."
        ),
    ),
    ("GET", "/runs/{run_id}"): _op(
        "Show a run",
        {200: _ok("Run", "The run.")},
        (*_AUTHED, 404),
        parameters=[_path("run_id", "The run id.")],
        tag="workflows",
    ),
    ("GET", "/runs/{run_id}/timeline"): _op(
        "Show a run's step timeline",
        {200: _ok("Timeline", "The run and its steps.")},
        (*_AUTHED, 404),
        parameters=[_path("run_id", "The run id.")],
        tag="workflows",
    ),
    ("POST", "/runs/{run_id}/cancel"): _op(
        "Cancel a run",
        {200: _ok("Run", "The cancelled run.")},
        (*_AUTHED, 404, 409),
        parameters=[_path("run_id", "The run id.")],
        tag="workflows",
    ),
    ("POST", "/runs/{run_id}/replay"): _op(
        "Replay a finished run from a step",
        {201: _ok("Run", "The new run.")},
        (*_AUTHED, 404, 409),
        parameters=[_path("run_id", "The run id.")],
        body=_body("ReplayRunRequest"),
        tag="workflows",
    ),
    ("POST", "/events"): _op(
        "Send an event to runs",
        {202: _ok("EventResult", "The runs the event reached.")},
        (*_AUTHED, 404, 422),
        body=_body("EventRequest"),
        tag="workflows",
    ),
    ("GET", "/queues"): _op(
        "List queues",
        {200: _ok("QueuePage", "A page of queues.")},
        _AUTHED,
        parameters=_paging("asc"),
        tag="cluster",
    ),
    ("POST", "/queues/{name}/pause"): _op(
        "Pause a queue",
        {200: _ok("QueueStats", "The queue.")},
        (*_AUTHED, 404),
        parameters=[_path("name", "The queue name.")],
        tag="cluster",
    ),
    ("POST", "/queues/{name}/resume"): _op(
        "Resume a queue",
        {200: _ok("QueueStats", "The queue.")},
        (*_AUTHED, 404),
        parameters=[_path("name", "The queue name.")],
        tag="cluster",
    ),
    ("GET", "/workers"): _op(
        "List workers and the leader",
        {200: _ok("WorkerPage", "A page of workers.")},
        _AUTHED,
        parameters=_paging("asc"),
        tag="cluster",
    ),
    ("GET", "/cron"): _op(
        "List cron entries",
        {200: _ok("CronPage", "A page of cron entries.")},
        _AUTHED,
        parameters=_paging("asc"),
        tag="cluster",
    ),
    ("GET", "/cron/{name}"): _op(
        "Show a cron entry",
        {200: _ok("CronEntry", "The entry.")},
        (*_AUTHED, 404),
        parameters=[_path("name", "The entry name.")],
        tag="cluster",
    ),
    ("POST", "/cron/{name}/trigger"): _op(
        "Trigger a cron entry now",
        {201: _ok("Job", "The job enqueued.")},
        (*_AUTHED, 404, 422),
        parameters=[_path("name", "The entry name.")],
        tag="cluster",
    ),
    ("POST", "/cron/{name}/enable"): _op(
        "Enable a cron entry",
        {200: _ok("CronEntry", "The entry.")},
        (*_AUTHED, 404),
        parameters=[_path("name", "The entry name.")],
        tag="cluster",
    ),
    ("POST", "/cron/{name}/disable"): _op(
        "Disable a cron entry",
        {200: _ok("CronEntry", "The entry.")},
        (*_AUTHED, 404),
        parameters=[_path("name", "The entry name.")],
        tag="cluster",
    ),
    ("GET", "/stats"): _op(
        "Overview: counts, dead letters, throughput, unhandled jobs, queues and workers",
        {200: _ok("Stats", "The figures.")},
        _AUTHED,
        parameters=[
            _query(
                "window",
                {"type": "integer", "minimum": 10, "maximum": 7 * 86400, "default": 3600},
                "Seconds of throughput history.",
            ),
            _query(
                "bucket",
                {"type": "integer", "minimum": 10, "maximum": 7 * 86400, "default": 60},
                "Seconds per throughput bucket (at most 1000 buckets, at most the window).",
            ),
            _TENANT,
        ],
        tag="stats",
    ),
}


def openapi_document(server_url: str = "/") -> dict[str, Any]:
    """The OpenAPI 3.1 document, with the admin app's mount point as its server.

    Raises:
        KeyError: an endpoint has no entry in :data:`OPERATIONS` (a bug the tests catch).
    """
    return copy.deepcopy(_document(server_url))


@functools.lru_cache(maxsize=16)
def _document(server_url: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Schema]] = {}
    for endpoint in ENDPOINTS:
        operation: Schema = {
            "operationId": endpoint.operation_id,
            **OPERATIONS[(endpoint.method, endpoint.path)],
        }
        if endpoint.method == "POST":  # every POST reads its body, if only to check it is {}
            responses = {**operation["responses"], "413": _error(413)}
            operation["responses"] = dict(sorted(responses.items()))
        if endpoint.scope is None:
            operation["security"] = []
        else:
            needs = f"Needs the scope `{endpoint.scope.value}`"
            if endpoint.operator_only:
                needs += " and an operator token (bound to no tenant)"
            extra = operation.get("description")
            operation["description"] = needs + "." + (f" {extra}" if extra else "")
            operation["x-dispatch-scope"] = endpoint.scope.value
            operation["x-dispatch-operator-only"] = endpoint.operator_only
        paths.setdefault("/v1" + endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Dispatch admin API",
            "version": "1",
            "description": (
                "Inspect and steer Dispatch jobs, dead letters, workflows, cron, queues and "
                "workers. Every list is a page: pass `next_cursor` back as `cursor` (the short "
                "summary of /v1/jobs/unhandled aside). Errors "
                'are `{"error": {"code", "message", "details"}}`.'
            ),
        },
        "servers": [{"url": server_url}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
        },
    }
