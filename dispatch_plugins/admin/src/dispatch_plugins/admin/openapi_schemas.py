"""The schemas of the admin API's OpenAPI document: the objects its routes send and take.

:mod:`~dispatch_plugins.admin.openapi` builds the document's paths from the endpoint table
and refers to these by name.
"""

from __future__ import annotations

import copy
from typing import Any

from dispatch_core import JobState, RunState, StepKind, StepState, WorkerState
from dispatch_core.cron import MisfirePolicy
from dispatch_core.models import DLQEntry, Job
from dispatch_core.workflows.models import WorkflowRun
from dispatch_plugins.admin.codec import BODY_FIELDS

__all__ = [
    "SCHEMAS",
    "Schema",
    "ref",
    "enum_schema",
    "ANY",
    "BOOLEAN",
    "DATETIME",
    "HEADERS",
    "INTEGER",
    "NUMBER",
    "STRING",
    "TEXT",
]

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    """A reference to the component schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


def _null(schema: Schema) -> Schema:
    """``schema`` or ``null``."""
    if set(schema) <= {"type", "format"} and isinstance(schema.get("type"), str):
        return {**schema, "type": [schema["type"], "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _object(properties: dict[str, Schema], required: list[str] | None = None) -> Schema:
    """A closed object; every property is required unless ``required`` says otherwise."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def enum_schema(values: Any) -> Schema:
    """A string schema allowing the values of an enum."""
    return {"type": "string", "enum": [v.value for v in values]}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
DATETIME: Schema = {"type": "string", "format": "date-time"}
ANY: Schema = {}
#: Ids, names, queues, tenants and keys as the API accepts them.
TEXT: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 200,
    "pattern": "^[^\\x00-\\x1f\\x7f]*$",
}
HEADERS: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
_TEN_YEARS = 10 * 365 * 86400


def _page(item: str, **extra: Schema) -> Schema:
    return _object(
        {"items": {"type": "array", "items": ref(item)}, "next_cursor": _null(STRING), **extra}
    )


_JOB_COUNTS = _object({s.value: {"type": "integer", "minimum": 0} for s in JobState})


def _with_previews(schema: Schema, bodies: tuple[str, ...]) -> Schema:
    """``schema`` (an object) as a listing sends it: each of ``bodies`` may be left out, sent
    as ``null`` beside ``<body>_truncated``, ``<body>_preview`` and ``<body>_size``."""
    listed = copy.deepcopy(schema)
    properties = listed["properties"]
    rules: list[Schema] = []
    for body in bodies:
        properties[f"{body}_truncated"] = {
            "const": True,
            "description": f"Present when the listing left {body} out (it is then null): "
            f"longer than the preview length. GET the object for it whole.",
        }
        properties[f"{body}_preview"] = {
            "type": "string",
            "description": f"The start of {body}'s JSON text, at most the preview length in "
            "bytes of UTF-8, ending on a whole character.",
        }
        properties[f"{body}_size"] = {
            "type": "integer",
            "minimum": 0,
            "description": f"The length of {body}'s whole JSON text, in bytes of UTF-8.",
        }
        rules.append(
            {
                "if": {"required": [f"{body}_truncated"]},
                "then": {
                    "required": [f"{body}_preview", f"{body}_size"],
                    "properties": {body: {"type": "null"}},
                },
            }
        )
    listed["allOf"] = rules
    return listed


#: ``components.schemas``: every JSON shape the API sends or accepts.
SCHEMAS: dict[str, Schema] = {
    "Error": _object(
        {
            "error": _object(
                {"code": STRING, "message": STRING, "details": ANY},
            )
        }
    ),
    "Job": _object(
        {
            "id": STRING,
            "name": STRING,
            "queue": STRING,
            "payload": ANY,
            "state": enum_schema(JobState),
            "priority": INTEGER,
            "attempt": INTEGER,
            "max_attempts": INTEGER,
            "timeout": _null(NUMBER),
            "run_at": DATETIME,
            "created_at": DATETIME,
            "updated_at": DATETIME,
            "started_at": _null(DATETIME),
            "finished_at": _null(DATETIME),
            "last_error": _null(STRING),
            "unique_key": _null(STRING),
            "tenant": _null(STRING),
            "headers": HEADERS,
            "result": ANY,
            "worker_id": _null(STRING),
            "lease_expires_at": _null(DATETIME),
        }
    ),
    "DLQEntry": _object(
        {
            "id": STRING,
            "job_id": STRING,
            "name": STRING,
            "queue": STRING,
            "payload": ANY,
            "error": STRING,
            "attempts": INTEGER,
            "max_attempts": INTEGER,
            "priority": INTEGER,
            "timeout": _null(NUMBER),
            "tenant": _null(STRING),
            "headers": HEADERS,
            "failed_at": DATETIME,
            "replayed_at": _null(DATETIME),
            "replay_job_id": _null(STRING),
        }
    ),
    "Run": _object(
        {
            "id": STRING,
            "name": STRING,
            "version": INTEGER,
            "input": ANY,
            "state": enum_schema(RunState),
            "created_at": DATETIME,
            "updated_at": DATETIME,
            "finished_at": _null(DATETIME),
            "output": ANY,
            "error": _null(STRING),
            "tenant": _null(STRING),
            "parent_run_id": _null(STRING),
            "correlation_key": _null(STRING),
            "wake_at": _null(DATETIME),
            "waiting_for": _null(STRING),
            "generation": INTEGER,
        }
    ),
    "Step": _object(
        {
            "seq": INTEGER,
            "name": STRING,
            "kind": enum_schema(StepKind),
            "state": enum_schema(StepState),
            "started_at": DATETIME,
            "finished_at": _null(DATETIME),
            "output": ANY,
            "error": _null(STRING),
            "attempts": INTEGER,
            "wake_at": _null(DATETIME),
        }
    ),
    "Timeline": _object({"run": ref("Run"), "steps": {"type": "array", "items": ref("Step")}}),
    "Workflow": _object({"name": STRING, "version": INTEGER, "queue": STRING}),
    "CronEntry": _object(
        {
            "name": STRING,
            "expr": STRING,
            "timezone": STRING,
            "job_name": STRING,
            "payload": ANY,
            "queue": _null(STRING),
            "misfire": enum_schema(MisfirePolicy),
            "misfire_grace": NUMBER,
            "enabled": BOOLEAN,
            "next_run_at": DATETIME,
            "last_run_at": _null(DATETIME),
            "last_job_id": _null(STRING),
            "created_at": DATETIME,
            "updated_at": DATETIME,
            # Computed by the server in the entry's timezone; empty while disabled.
            "next_runs": {"type": "array", "items": DATETIME, "maxItems": 5},
        }
    ),
    "QueueConfig": _object(
        {
            "name": STRING,
            "concurrency": _null(INTEGER),
            "rate": _null(NUMBER),
            "burst": _null(INTEGER),
            "per_tenant": BOOLEAN,
        }
    ),
    "QueueStats": _object(
        {
            "name": STRING,
            "config": _null(ref("QueueConfig")),
            "paused": BOOLEAN,
            "depth": INTEGER,
            "running": INTEGER,
            "completed_last_minute": INTEGER,
        }
    ),
    "Worker": _object(
        {
            "id": STRING,
            "hostname": STRING,
            "pid": INTEGER,
            "queues": _null({"type": "array", "items": STRING}),
            "concurrency": INTEGER,
            "version": STRING,
            "started_at": DATETIME,
            "last_seen": DATETIME,
            "state": enum_schema(WorkerState),
            "leader": BOOLEAN,
            # The job names it runs; null from workers too old to report them.
            "names": _null({"type": "array", "items": STRING}),
        }
    ),
    "ThroughputBucket": _object(
        {
            "start": DATETIME,
            "completed": {"type": "integer", "minimum": 0},
            "failed": {"type": "integer", "minimum": 0},
        }
    ),
    "JobCounts": _JOB_COUNTS,
    "RunnableCount": _object(
        {"queue": STRING, "name": STRING, "count": {"type": "integer", "minimum": 1}}
    ),
    # Not a page: one row per queue and job name, ordered by queue then name.
    "UnhandledJobs": _object({"items": {"type": "array", "items": ref("RunnableCount")}}),
    "Count": _object({"count": {"type": "integer", "minimum": 0}}),
    "Stats": _object(
        {
            "jobs": ref("JobCounts"),
            "dlq": {"type": "integer", "minimum": 0},
            "throughput": {"type": "array", "items": ref("ThroughputBucket")},
            "unhandled": {"type": "array", "items": ref("RunnableCount")},
            "queues": _null({"type": "array", "items": ref("QueueStats")}),
            "workers": _null(
                _object({"running": {"type": "integer", "minimum": 0}, "leader": _null(STRING)})
            ),
        }
    ),
    "JobPage": _page("JobItem"),
    "DLQPage": _page("DLQItem"),
    "RunPage": _page("RunItem"),
    "WorkflowPage": _page("Workflow"),
    "QueuePage": _page("QueueStats"),
    "CronPage": _page("CronEntry"),
    "WorkerPage": _page("Worker", leader=_null(STRING)),
    "ReplayResult": _object(
        {
            "replayed": {
                "type": "array",
                "items": _object({"entry_id": STRING, "job_id": STRING}),
            },
            "errors": {
                "type": "array",
                "items": _object({"entry_id": STRING, "code": STRING, "message": STRING}),
            },
            "remaining": {"type": "integer", "minimum": 0},
        }
    ),
    "PurgeResult": _object(
        {
            "purged": {"type": "integer", "minimum": 0},
            "remaining": {"type": "integer", "minimum": 0},
        }
    ),
    "EventResult": _object({"run_ids": {"type": "array", "items": STRING}}),
    "Health": _object({"status": {"const": "ok"}}),
    "Ready": _object({"status": {"const": "ok"}, "store": {"const": "ok"}}),
    "EnqueueRequest": _object(
        {
            "name": TEXT,
            "payload": ANY,
            "queue": _null(TEXT),
            "priority": _null({"type": "integer", "minimum": -(2**31 - 1), "maximum": 2**31 - 1}),
            "delay": _null({"type": "number", "minimum": 0, "maximum": _TEN_YEARS}),
            "run_at": _null(DATETIME),
            "unique_key": _null(TEXT),
            "max_retries": _null({"type": "integer", "minimum": 0, "maximum": 1000}),
            "timeout": _null({"type": "number", "exclusiveMinimum": 0, "maximum": _TEN_YEARS}),
            "job_id": _null({"type": "string", "pattern": "^[!-~]{1,200}$"}),
            "tenant": _null(TEXT),
        },
        required=["name"],
    ),
    "ReplayRequest": _object(
        {
            "ids": _null({"type": "array", "items": TEXT, "minItems": 1, "maxItems": 1000}),
            "queue": _null(TEXT),
            "limit": _null({"type": "integer", "minimum": 1, "maximum": 1000}),
            "tenant": _null(TEXT),
        },
        required=[],
    ),
    "PurgeRequest": _object(
        {
            "before": DATETIME,
            "queue": _null(TEXT),
            "limit": _null({"type": "integer", "minimum": 1, "maximum": 10_000}),
            "tenant": _null(TEXT),
        },
        required=["before"],
    ),
    "StartRunRequest": _object(
        {"input": ANY, "correlation_key": _null(TEXT), "tenant": _null(TEXT)}, required=[]
    ),
    "ReplayRunRequest": _object({"from_step": TEXT}),
    "EventRequest": _object(
        {
            "name": TEXT,
            "payload": ANY,
            "run_id": _null(TEXT),
            "correlation_key": _null(TEXT),
            "tenant": _null(TEXT),
        },
        required=["name"],
    ),
}
# List items: the models, with the previews a listing may send (codec.BODY_FIELDS).
for _item, _model, _cls in (
    ("JobItem", "Job", Job),
    ("DLQItem", "DLQEntry", DLQEntry),
    ("RunItem", "Run", WorkflowRun),
):
    SCHEMAS[_item] = _with_previews(SCHEMAS[_model], BODY_FIELDS[_cls])
