"""The example app in-process, tested the way docs/adapters/flask.md says to test an app."""

from __future__ import annotations

import asyncio
import importlib
import pathlib
from types import ModuleType

import pytest
from flask import Flask

REPO = pathlib.Path(__file__).resolve().parents[3]


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO))
    return importlib.import_module("examples.flask_app")


@pytest.fixture
def app(example: ModuleType) -> Flask:
    app: Flask = example.create_app({"TESTING": True, "DISPATCH_URL": "memory://"})
    return app


def test_signup_sends_the_welcome(example: ModuleType, app: Flask) -> None:
    client = app.test_client()
    response = client.post("/signups", json={"user_id": 1, "email": "a@x"})
    assert response.status_code == 202
    assert response.json is not None
    engine = example.dispatch.get_engine(app)
    asyncio.run(engine.drain())
    job = engine.get_job(response.json["job_id"])
    assert job.state == "completed"
    assert job.result == {"from": "welcome@example.com", "to": "a@x"}
    shown = client.get(f"/jobs/{job.id}").json
    assert shown is not None
    assert shown["state"] == "completed"
    audit = client.get(f"/jobs/{response.json['audit_job_id']}").json
    assert audit is not None
    assert audit["result"] == {"app": "examples.flask_app", "user_id": 1}


def test_the_cli(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["dispatch", "jobs", "ls"])
    assert result.exit_code == 0
    assert result.output == "No jobs found.\n"


def test_every_create_app_is_a_separate_app(example: ModuleType) -> None:
    one = example.create_app({"DISPATCH_URL": "memory://"})
    two = example.create_app({"DISPATCH_URL": "memory://"})
    assert example.dispatch.get_engine(one) is not example.dispatch.get_engine(two)
    body = one.test_client().post("/signups", json={"user_id": 1, "email": "a@x"}).json
    assert body is not None
    assert one.test_client().get(f"/jobs/{body['job_id']}").status_code == 200
    assert two.test_client().get(f"/jobs/{body['job_id']}").status_code == 404  # other store
