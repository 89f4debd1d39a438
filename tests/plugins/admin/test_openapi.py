"""The OpenAPI document stays true: it names exactly the app's routes, every reference
resolves, and real responses of a populated app (successes and errors, for every operation)
validate against the schemas it documents for their status."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import jsonschema_rs
import pytest
from starlette.routing import Mount, Route

from dispatch_core import Engine
from dispatch_core.models import utcnow
from dispatch_plugins.admin.app import admin_app
from dispatch_plugins.admin.codec import format_datetime
from dispatch_plugins.admin.openapi import OPERATIONS, SCHEMAS, openapi_document
from dispatch_plugins.admin.routes import ENDPOINTS

DOCUMENT = openapi_document()
METHODS = {"get", "post", "put", "patch", "delete"}


def app_operations(engine: Engine) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves under /v1 (HEAD aside)."""
    app = admin_app(engine, tokens=[], dashboard=False)
    found: set[tuple[str, str]] = set()
    for mount in app.routes:
        assert isinstance(mount, Mount)
        assert mount.path == "/v1"
        for route in mount.routes:
            assert isinstance(route, Route)
            assert route.methods is not None
            found |= {(m, "/v1" + route.path) for m in route.methods if m != "HEAD"}
    return found


def test_the_document_and_the_app_have_the_same_operations(engine: Engine) -> None:
    documented = {
        (method.upper(), path)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method in METHODS
    }
    assert documented == app_operations(engine)
    assert set(OPERATIONS) == {(e.method, e.path) for e in ENDPOINTS}


def test_the_document_is_openapi_31_with_bearer_auth() -> None:
    assert DOCUMENT["openapi"] == "3.1.0"
    # The OpenAPI 3.1 meta-schema, as Schemathesis ships it (copied from the OAI repository).
    from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

    assert [e.message for e in OPENAPI_31_VALIDATOR.iter_errors(DOCUMENT)] == []
    assert DOCUMENT["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
    }
    assert DOCUMENT["security"] == [{"bearerAuth": []}]
    ids = [op["operationId"] for item in DOCUMENT["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    for endpoint in ENDPOINTS:
        op = DOCUMENT["paths"]["/v1" + endpoint.path][endpoint.method.lower()]
        if endpoint.scope is None:
            assert op["security"] == []
        else:
            assert op["x-dispatch-scope"] == endpoint.scope.value
            assert {"401", "403"} <= set(op["responses"])
        # Path parameters are declared, and only they.
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"\{([^}]+)\}", endpoint.path))


def test_every_schema_is_valid_json_schema_and_every_ref_resolves() -> None:
    for name, schema in SCHEMAS.items():
        assert jsonschema_rs.meta.is_valid(schema), name
    refs = set(re.findall(r"#/components/schemas/(\w+)", str(DOCUMENT)))
    assert refs <= set(SCHEMAS)
    needed = {"Job", "DLQEntry", "Run", "Step", "CronEntry", "QueueStats", "Worker", "Error"}
    assert needed <= refs
    assert {name for name in SCHEMAS if name.endswith("Page")} <= refs


def validator(schema: dict[str, Any]) -> jsonschema_rs.Validator:
    root = {**schema, "components": DOCUMENT["components"]}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True)


class Checker:
    """Calls the API and validates each response against the document."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.seen: set[tuple[str, str, int]] = set()

    async def __call__(
        self, method: str, template: str, status: int, token: str | None = None, **kw: Any
    ) -> Any:
        path = template.format(**kw.pop("ids", {}))
        response = await self.api.request(
            method, path, token=self.api.OPS if token is None else token, **kw
        )
        assert response.status_code == status, (method, path, response.text)
        operation = DOCUMENT["paths"]["/v1" + template][method.lower()]
        documented = operation["responses"].get(str(status))
        assert documented is not None, f"{method} {template} answers {status}, undocumented"
        schema = documented["content"]["application/json"]["schema"]
        body = response.json()
        errors = [e.message for e in validator(schema).iter_errors(body)]
        assert not errors, (method, path, errors, body)
        self.seen.add((method, template, status))
        return body


async def test_real_responses_match_the_schemas(api: Any, world: Any) -> None:
    engine = api.engine
    engine.schedule("nightly", "0 3 * * *", "noop")
    await engine.apply_schedules()
    check = Checker(api)
    a = world["A"]
    soon = format_datetime(utcnow() + timedelta(minutes=1))

    await check("GET", "/health/live", 200)
    await check("GET", "/health/ready", 200)
    await check("GET", "/openapi.json", 200)
    await check("GET", "/jobs", 200, params={"limit": 1})
    await check("GET", "/jobs/counts", 200)
    # With no worker running, a runnable job waits for one: a row to validate.
    await check("POST", "/jobs", 201, json={"name": "noop"})
    unhandled = await check("GET", "/jobs/unhandled", 200)
    assert unhandled["items"] == [{"queue": "default", "name": "noop", "count": 1}]
    await check("GET", "/jobs/unhandled", 200, token=api.A, params={"tenant": "A"})
    await check("GET", "/jobs/unhandled", 403, token=api.A, params={"tenant": "B"})
    await check("POST", "/jobs", 201, json={"name": "send", "payload": 1, "unique_key": "u"})
    await check("POST", "/jobs", 200, json={"name": "send", "payload": 1, "unique_key": "u"})
    await check("POST", "/jobs", 422, json={"name": "send", "payload": "x"})
    await check("POST", "/jobs", 422, json={"name": "nope"})
    await check("POST", "/jobs", 400, json={"name": 1})
    # keys are per tenant, ids are not: B's tenant cannot take the operator's chosen id, and
    # a tenant token may not choose one at all
    await check("POST", "/jobs", 201, json={"name": "send", "payload": 1, "job_id": "u-1"})
    await check(
        "POST", "/jobs", 409, json={"name": "send", "payload": 1, "job_id": "u-1", "tenant": "B"}
    )
    await check(
        "POST", "/jobs", 403, token=api.B, json={"name": "send", "payload": 1, "job_id": "u-2"}
    )
    # noop is the job of the cron entry "nightly": operator-only
    await check("POST", "/jobs", 403, token=api.B, json={"name": "noop"})
    await check("GET", "/jobs/{job_id}", 200, ids={"job_id": a.pending_job})
    await check("GET", "/jobs/{job_id}", 404, ids={"job_id": "job_nope"})
    await check("POST", "/jobs/{job_id}/retry", 409, ids={"job_id": a.pending_job})
    await check("POST", "/jobs/{job_id}/cancel", 200, ids={"job_id": a.pending_job})
    await check("POST", "/jobs/{job_id}/cancel", 409, ids={"job_id": a.pending_job})
    await check("POST", "/jobs/{job_id}/retry", 200, ids={"job_id": a.failed_job})
    await check("GET", "/dlq", 200)
    await check("GET", "/dlq/count", 200)
    await check("GET", "/dlq", 200, params={"replayed": "false"})
    await check("GET", "/dlq/count", 200, params={"replayed": "true", "before": soon})
    await check("GET", "/dlq/count", 400, params={"replayed": "maybe"})
    await check("GET", "/dlq/{entry_id}", 200, ids={"entry_id": a.dlq_entry})
    await check("POST", "/dlq/{entry_id}/replay", 201, ids={"entry_id": a.dlq_entry})
    await check("POST", "/dlq/replay", 200, json={"ids": [a.dlq_entry, "dlq_nope"]})
    await check("POST", "/dlq/purge", 200, json={"before": soon, "limit": 1})
    await check("POST", "/dlq/purge", 400, json={})
    await check("GET", "/workflows", 200)
    await check("POST", "/workflows/{name}/runs", 201, ids={"name": "order"}, json={"input": 2})
    await check("POST", "/workflows/{name}/runs", 404, ids={"name": "nope"})
    await check("POST", "/workflows/{name}/runs", 422, ids={"name": "order"}, json={"input": "x"})
    await check("GET", "/runs", 200, params={"state": "completed"})
    await check("GET", "/runs/{run_id}", 200, ids={"run_id": a.run})
    await check("GET", "/runs/{run_id}/timeline", 200, ids={"run_id": a.run})
    await check(
        "POST", "/runs/{run_id}/replay", 201, ids={"run_id": a.run}, json={"from_step": "charge"}
    )
    await check(
        "POST", "/runs/{run_id}/replay", 409, ids={"run_id": a.waiting_run}, json={"from_step": "x"}
    )
    await check("POST", "/events", 202, json={"name": "approved", "run_id": a.waiting_run})
    await check("POST", "/events", 404, json={"name": "approved", "run_id": "wfrun_nope"})
    await check("POST", "/runs/{run_id}/cancel", 200, ids={"run_id": world["B"].waiting_run})
    await check("POST", "/runs/{run_id}/cancel", 409, ids={"run_id": a.run})
    await check("GET", "/queues", 200)
    await check("POST", "/queues/{name}/pause", 200, ids={"name": "default"})
    await check("POST", "/queues/{name}/resume", 200, ids={"name": "default"})
    await check("GET", "/queues", 403, token=api.A)
    await check("GET", "/workers", 200)
    await check("GET", "/cron", 200)
    await check("GET", "/cron/{name}", 200, ids={"name": "nightly"})
    await check("GET", "/cron/{name}", 404, ids={"name": "nope"})
    await check("POST", "/cron/{name}/disable", 200, ids={"name": "nightly"})
    await check("POST", "/cron/{name}/enable", 200, ids={"name": "nightly"})
    await check("POST", "/cron/{name}/trigger", 201, ids={"name": "nightly"})
    stats = await check("GET", "/stats", 200)
    assert stats["unhandled"]
    await check("GET", "/stats", 200, token=api.A)
    await check("GET", "/stats", 400, params={"bucket": "1"})
    await check("GET", "/jobs", 401, token="nope")
    await check("POST", "/jobs", 403, token=api.READER, json={})
    await check("GET", "/jobs", 403, token=api.A, params={"tenant": "B"})
    success = {(m, t) for m, t, s in check.seen if s < 300}
    documented = {(e.method, e.path) for e in ENDPOINTS}
    assert documented == success, documented - success


async def test_the_worker_schema_matches_a_real_worker(api: Any) -> None:
    import asyncio

    worker = api.engine.worker(concurrency=1)
    task = asyncio.ensure_future(worker.run(install_signal_handlers=False))
    try:

        async def registered() -> bool:
            return bool(await api.engine.aworkers())

        await api.wait_until(registered)
        body = await Checker(api)("GET", "/workers", 200)
        assert body["items"][0]["id"] == worker.id
    finally:
        worker.stop(grace=1)
        await task


@pytest.mark.parametrize("path", ["/dispatch/v1/nope", "/dispatch/v1/jobs/x/y/z"])
async def test_error_bodies_of_unknown_routes_match_the_error_schema(api: Any, path: str) -> None:
    response = await api.client.get(path, headers={"Authorization": f"Bearer {api.OPS}"})
    assert response.status_code == 404
    assert validator({"$ref": "#/components/schemas/Error"}).is_valid(response.json())


async def test_the_served_document_is_the_module_one(api: Any) -> None:
    served = await api.ok("GET", "/openapi.json", token=None)
    assert served == openapi_document("/dispatch")
