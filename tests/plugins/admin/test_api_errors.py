"""Every failure is ``{"error": {"code", "message", "details"}}``: unknown routes, wrong
methods, bad JSON, unknown parameters and fields; and the plumbing around the routes
(mount point, HEAD, plugin routes, the dashboard switch, the engine lifespan)."""

from __future__ import annotations

from typing import Any

import attrs
import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dispatch_core import Engine, hookimpl
from dispatch_plugins.admin.app import admin_app
from dispatch_plugins.admin.auth import Token
from dispatch_plugins.admin.routes import request_token


@pytest.mark.parametrize("token", [None, "ops"])
async def test_an_unknown_route_under_v1(api: Any, token: str | None) -> None:
    response = await api.get("/nope", token=api.OPS if token else None)
    # Without a token, nothing under /v1 (but the public probes) tells what exists.
    if token is None:
        api.error(response, 401, "unauthorized")
    else:
        assert "GET /dispatch/v1/nope" in api.error(response, 404, "not_found")["message"]


async def test_an_unknown_route_outside_v1(api: Any) -> None:
    api.error(await api.client.get("/dispatch/nothing/here"), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/jobs", {"GET", "HEAD", "POST"}),
        ("PUT", "/jobs/job_1", {"GET", "HEAD"}),
        ("GET", "/jobs/job_1/cancel", {"POST"}),
        ("POST", "/dlq/count", {"GET", "HEAD"}),
        ("PATCH", "/health/live", {"GET", "HEAD"}),
    ],
)
async def test_a_wrong_method_is_405_with_allow(
    api: Any, method: str, path: str, allowed: set[str]
) -> None:
    error = api.error(await api.request(method, path), 405, "method_not_allowed")
    response = await api.request(method, path)
    assert set(response.headers["allow"].split(", ")) == allowed
    assert method in error["message"]


@pytest.mark.parametrize(
    "path", ["/jobs/job_1/cancel", "/dlq/dlq_1/replay", "/runs/r/cancel", "/cron/c/enable"]
)
async def test_bodies_of_routes_without_one_must_be_empty_objects(api: Any, path: str) -> None:
    error = api.error(await api.post(path, json={"force": True}), 400, "invalid_request")
    assert error["details"]["field"] == "force"
    api.error(await api.post(path, content=b"nonsense"), 400, "invalid_request")


@pytest.mark.parametrize("path", ["/jobs/job_1", "/jobs/counts", "/dlq/count", "/stats"])
async def test_unknown_query_parameters_are_refused(api: Any, path: str) -> None:
    error = api.error(await api.get(path, params={"verbose": "1"}), 400, "invalid_request")
    assert error["details"] == {"field": "verbose"}


async def test_head_is_served_like_get(api: Any) -> None:
    response = await api.request("HEAD", "/jobs/counts")
    assert response.status_code == 200


async def test_the_app_works_unmounted_too(engine: Engine) -> None:
    app = admin_app(engine, tokens=[Token(name="t", secret="s" * 16, scopes=frozenset({"admin"}))])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/v1/jobs", headers={"Authorization": "Bearer " + "s" * 16})
        assert response.json() == {"items": [], "next_cursor": None}
        document = (await client.get("/v1/openapi.json")).json()
        assert document["servers"] == [{"url": "/"}]


async def test_the_openapi_document_names_the_mount_point(api: Any) -> None:
    document = await api.ok("GET", "/openapi.json", token=None)
    assert document["servers"] == [{"url": "/dispatch"}]


class _RoutesPlugin:
    @hookimpl
    def dispatch_register_routes(self, routes: list[Any], engine: Engine) -> None:
        async def hello(request: Request) -> JSONResponse:
            token = request_token(request)
            return JSONResponse({"hello": token.name if token else None})

        routes.append(Route("/hello", hello))


async def test_plugin_routes_are_mounted_under_v1_behind_the_tokens(
    engine: Engine, make_api: Any
) -> None:
    engine.register_plugin(_RoutesPlugin())
    async with make_api() as api:
        assert await api.ok("GET", "/hello") == {"hello": "ops"}
        api.error(await api.get("/hello", token=None), 401, "unauthorized")


async def test_dashboard_false_serves_only_the_api(make_api: Any) -> None:
    async with make_api(dashboard=False) as api:
        api.error(await api.client.get("/dispatch/"), 404, "not_found")
        assert (await api.get("/health/live")).status_code == 200


async def test_manage_engine_opens_and_closes_it(engine: Engine) -> None:
    from starlette.testclient import TestClient

    opened: list[str] = []
    original_open, original_close = engine.aopen, engine.aclose

    async def aopen() -> None:
        opened.append("open")
        await original_open()

    async def aclose() -> None:
        opened.append("close")
        await original_close()

    engine.aopen = aopen  # type: ignore[method-assign]
    engine.aclose = aclose  # type: ignore[method-assign]
    with TestClient(admin_app(engine, tokens=[], manage_engine=True)) as client:
        assert client.get("/v1/health/live").status_code == 200
        assert opened[0] == "open"
    assert opened[-1] == "close"
    opened.clear()
    with TestClient(admin_app(engine, tokens=[])) as client:
        client.get("/v1/health/live")
    assert opened == []


async def test_a_body_over_10_mib_is_413(api: Any) -> None:
    big = b'{"name": "send", "payload": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    error = api.error(await api.post("/jobs", content=big), 413, "request_too_large")
    assert error["details"] == {"limit": 10 * 1024 * 1024}

    async def chunks() -> Any:  # no Content-Length: the limit holds while reading
        for _ in range(11):
            yield b" " * (1024 * 1024)

    response = await api.client.post(
        "/dispatch/v1/jobs", content=chunks(), headers={"Authorization": f"Bearer {api.OPS}"}
    )
    api.error(response, 413, "request_too_large")


async def test_a_stored_nan_is_sent_as_null(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Python's json module writes NaN, so a producer may have stored one in a result.
    job = await api.engine.aenqueue("noop")
    real = api.engine.aget_job

    async def with_nan(job_id: str) -> Any:
        return attrs.evolve(await real(job_id), result={"ratio": float("nan"), "ok": [1.5]})

    monkeypatch.setattr(api.engine, "aget_job", with_nan)
    body = await api.ok("GET", f"/jobs/{job.id}")
    assert body["result"] == {"ratio": None, "ok": [1.5]}
