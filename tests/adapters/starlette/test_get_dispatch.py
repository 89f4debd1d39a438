"""get_dispatch: in Starlette endpoints, as a FastAPI dependency, and from mounted apps."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from dispatch_core import ConfigurationError, Engine
from dispatch_starlette import LifespanNotInstalledError, dispatch_lifespan, get_dispatch


async def engine_url(request: Request) -> JSONResponse:
    return JSONResponse({"url": get_dispatch(request).url})


def test_starlette_endpoint(memory_engine: Engine) -> None:
    app = Starlette(routes=[Route("/", engine_url)], lifespan=dispatch_lifespan(memory_engine))
    with TestClient(app) as client:
        assert client.get("/").json() == {"url": "memory://"}


def test_without_the_lifespan_the_error_says_how_to_install_it() -> None:
    app = Starlette(routes=[Route("/jobs", engine_url)])
    with TestClient(app) as client, pytest.raises(LifespanNotInstalledError) as raised:
        client.get("/jobs")
    message = str(raised.value)
    assert message.startswith("no Dispatch engine for GET /jobs: the app has no Dispatch lifespan")
    assert "lifespan=dispatch_lifespan(engine)" in message
    assert isinstance(raised.value, ConfigurationError)
    assert isinstance(raised.value, RuntimeError)


def test_a_client_that_does_not_run_the_lifespan_gets_the_same_error(
    memory_engine: Engine,
) -> None:
    app = Starlette(routes=[Route("/", engine_url)], lifespan=dispatch_lifespan(memory_engine))
    client = TestClient(app)  # not entered: the lifespan does not run
    with pytest.raises(LifespanNotInstalledError, match=r"`with TestClient\(app\) as client:`"):
        client.get("/")


def test_a_foreign_value_under_the_key_is_refused(memory_engine: Engine) -> None:
    @contextlib.asynccontextmanager
    async def other(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {"dispatch": "something else"}

    app = Starlette(routes=[Route("/", engine_url)], lifespan=other)
    with TestClient(app) as client, pytest.raises(LifespanNotInstalledError) as raised:
        client.get("/")
    assert str(raised.value).startswith(
        "request.state.dispatch is a str, not a dispatch_core.Engine (GET /)"
    )


def test_fastapi_dependency(memory_engine: Engine) -> None:
    @memory_engine.job(name="t.add")
    async def add(pair: list[int]) -> int:
        return sum(pair)

    app = FastAPI(lifespan=dispatch_lifespan(memory_engine, run_worker=True))

    @app.post("/add")
    async def enqueue(
        pair: list[int], dispatch: Annotated[Engine, Depends(get_dispatch)]
    ) -> dict[str, Any]:
        job = await dispatch.aenqueue("t.add", pair)
        return {"id": job.id, "same_engine": dispatch is memory_engine}

    with TestClient(app) as client:
        reply = client.post("/add", json=[2, 3]).json()
        assert reply["same_engine"] is True
        assert reply["id"].startswith("job_")
    assert memory_engine.get_job(reply["id"]).payload == [2, 3]


def test_fastapi_dependency_without_the_lifespan() -> None:
    app = FastAPI()

    @app.get("/")
    async def index(dispatch: Annotated[Engine, Depends(get_dispatch)]) -> str:
        return dispatch.url

    with TestClient(app) as client, pytest.raises(LifespanNotInstalledError, match="GET /"):
        client.get("/")


def test_a_mounted_app_finds_the_engine(memory_engine: Engine) -> None:
    # The extension point for the admin API: a sub-app mounted under the user's app has no
    # lifespan of its own, and reaches the engine through the request's lifespan state.
    admin = Starlette(routes=[Route("/health", engine_url)])
    app = Starlette(
        routes=[Mount("/dispatch", app=admin)], lifespan=dispatch_lifespan(memory_engine)
    )
    with TestClient(app) as client:
        assert client.get("/dispatch/health").json() == {"url": "memory://"}


def test_websocket(memory_engine: Engine) -> None:
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"url": get_dispatch(websocket).url})
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/ws", ws)], lifespan=dispatch_lifespan(memory_engine))
    with TestClient(app) as client, client.websocket_connect("/ws") as socket:
        assert socket.receive_json() == {"url": "memory://"}
