"""``Dispatch.mount_admin``: the admin app beside a Flask app, through a2wsgi."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from flask import Flask

from dispatch_flask import Dispatch
from dispatch_plugins.admin import Token

TOKEN = Token(name="ops", secret="flask-mount-secret-0123456789", scopes=frozenset({"admin"}))
AUTH = {"Authorization": f"Bearer {TOKEN.secret}"}


@pytest.fixture
def app() -> Any:
    dispatch = Dispatch()

    @dispatch.job(name="mount.greet")
    def greet(name: str) -> str:
        return f"hello {name}"

    app = Flask("mount")
    app.config["DISPATCH_URL"] = "memory://"
    dispatch.init_app(app)
    dispatch.mount_admin(app, prefix="/ops/dispatch", tokens=[TOKEN])

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    yield app
    dispatch.get_engine(app).close()


def _pending_admin_tasks(app: Flask) -> int:
    responder = app.wsgi_app.mounts["/ops/dispatch"]._app  # type: ignore[attr-defined]
    # The engine's own long-lived task (it runs lifecycle hooks, e.g. dispatch-otel's) is
    # not a leftover of a request.
    tasks = asyncio.all_tasks(responder.loop)
    return len([t for t in tasks if t.get_name() != "dispatch-hooks"])


def test_the_api_and_dashboard_are_served_under_the_prefix(app: Flask) -> None:
    client = app.test_client()
    refused = client.get("/ops/dispatch/v1/jobs")
    assert refused.status_code == 401
    assert refused.json is not None
    assert refused.json["error"]["code"] == "unauthorized"
    made = client.post(
        "/ops/dispatch/v1/jobs", json={"name": "mount.greet", "payload": "ada"}, headers=AUTH
    )
    assert made.status_code == 201, made.data
    assert made.json is not None
    listed = client.get("/ops/dispatch/v1/jobs", headers=AUTH).json
    assert listed is not None
    assert [job["id"] for job in listed["items"]] == [made.json["id"]]
    assert b"<html" in client.get("/ops/dispatch/").data.lower()
    assert client.get("/ping").data == b"pong"  # the app's own routes are untouched


def test_a_response_closed_unread_leaves_no_task_behind(app: Flask) -> None:
    client = app.test_client()
    for _ in range(20):
        response = client.get("/ops/dispatch/v1/jobs", headers=AUTH)
        assert response.status_code == 200
        response.close()  # a client gone before the body was read
    deadline = time.monotonic() + 10
    while _pending_admin_tasks(app) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _pending_admin_tasks(app) == 0


@pytest.mark.parametrize("prefix", ["dispatch", "/dispatch/", "//x", ""])
def test_a_bad_prefix_is_refused(prefix: str) -> None:
    dispatch = Dispatch()
    app = Flask("bad")
    app.config["DISPATCH_URL"] = "memory://"
    dispatch.init_app(app)
    try:
        with pytest.raises(ValueError, match="prefix must look like /dispatch"):
            dispatch.mount_admin(app, prefix=prefix, tokens=[TOKEN])
    finally:
        dispatch.get_engine(app).close()
