"""``flask dispatch …``: the core commands on the current app's engine (app.test_cli_runner)."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import Result
from flask import Flask, current_app, g

from dispatch_core import JobContext, JobNotFoundError, JobState
from dispatch_flask import Dispatch

MakeApp = Callable[..., Flask]


@pytest.fixture
def app(dispatch: Dispatch, make_app: MakeApp, sqlite_url: str) -> Flask:
    """An app on a SQLite file, with an async, a sync, a failing and a cron job."""

    @dispatch.job(name="cli.greet", queue="emails")
    async def greet(ctx: JobContext, name: str) -> str:
        return f"{current_app.config['GREETING']}, {name} (attempt {ctx.attempt})"

    @dispatch.job(name="cli.count")
    def count(n: int) -> dict[str, Any]:
        g.n = n
        return {"app": current_app.name, "n": g.n}

    @dispatch.job(name="cli.fail", max_retries=0)
    def fail() -> None:
        raise RuntimeError("broken on purpose")

    @dispatch.cron("0 3 * * *", name="cli.nightly")
    async def nightly() -> None: ...

    return make_app("cli_app", DISPATCH_URL=sqlite_url, GREETING="Hello")


def invoke(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["dispatch", *args])


def ok(app: Flask, *args: str) -> str:
    result = invoke(app, *args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def enqueue(dispatch: Dispatch, app: Flask, name: str, payload: Any = None) -> str:
    engine = dispatch.get_engine(app)
    definition = engine.get_definition(name)
    job = engine.enqueue(definition, payload) if definition.takes_payload else engine.enqueue(name)
    return job.id


def test_the_group_offers_the_core_commands(app: Flask) -> None:
    output = ok(app, "--help")
    for name in ("worker", "migrate", "jobs", "dlq", "cron", "workers", "queues", "plugins"):
        assert f"  {name}" in output
    worker_help = " ".join(ok(app, "worker", "--help").split())
    assert "app.app_context()" in worker_help
    assert "(config: DISPATCH_WORKER_CONCURRENCY)" in worker_help
    assert "--url" not in ok(app, "jobs", "ls", "--help")  # the app's engine, always
    assert worker_help.startswith("Usage: cli_app dispatch worker [OPTIONS] ")  # no APP


def test_worker_runs_jobs_in_the_app_context_with_config_defaults(
    dispatch: Dispatch, make_app: MakeApp, tmp_path: pathlib.Path
) -> None:
    @dispatch.job(name="cli.whoami")
    async def whoami() -> str:
        return str(current_app.name)

    @dispatch.job(name="cli.whoami_sync")
    def whoami_sync() -> str:
        return f"{current_app.name}/{current_app.config['DISPATCH_WORKER_CONCURRENCY']}"

    app = make_app(
        "worker_app", DISPATCH_URL=f"sqlite:///{tmp_path / 'w.db'}", DISPATCH_WORKER_CONCURRENCY=3
    )
    ids = [enqueue(dispatch, app, "cli.whoami"), enqueue(dispatch, app, "cli.whoami_sync")]
    output = ok(app, "worker", "--burst")
    assert "in burst mode" in output
    assert f"store sqlite:///{tmp_path / 'w.db'}" in output
    assert "concurrency 3 |" in output  # from DISPATCH_WORKER_CONCURRENCY
    assert "2 completed" in output
    engine = dispatch.get_engine(app)
    assert [engine.get_job(i).result for i in ids] == ["worker_app", "worker_app/3"]
    assert "concurrency 5 |" in ok(app, "worker", "--burst", "-c", "5")  # the flag wins


def test_worker_queues_come_from_the_config_unless_given(
    dispatch: Dispatch, make_app: MakeApp, tmp_path: pathlib.Path
) -> None:
    @dispatch.job(name="cli.mail", queue="emails")
    def mail() -> None: ...

    @dispatch.job(name="cli.other")
    def other() -> None: ...

    app = make_app(
        "q_app", DISPATCH_URL=f"sqlite:///{tmp_path / 'q.db'}", DISPATCH_WORKER_QUEUES=["emails"]
    )
    mail_id, other_id = enqueue(dispatch, app, "cli.mail"), enqueue(dispatch, app, "cli.other")
    assert "queues emails |" in ok(app, "worker", "--burst")
    engine = dispatch.get_engine(app)
    assert engine.get_job(mail_id).state is JobState.COMPLETED
    assert engine.get_job(other_id).state is JobState.PENDING
    assert "queues default |" in ok(app, "worker", "--burst", "-q", "default")
    assert engine.get_job(other_id).state is JobState.COMPLETED


def test_migrate_applies_the_schema_to_the_app_store(
    dispatch: Dispatch, make_app: MakeApp, tmp_path: pathlib.Path
) -> None:
    app = make_app(
        "m_app", DISPATCH_URL=f"sqlite:///{tmp_path / 'm.db'}", DISPATCH_AUTO_MIGRATE=False
    )
    first = ok(app, "migrate")
    assert first.startswith("Applied ")
    assert "is up to date" in ok(app, "migrate")


def test_jobs_dlq_cron_and_queues_operate_on_the_app_store(dispatch: Dispatch, app: Flask) -> None:
    greet_id = enqueue(dispatch, app, "cli.greet", "Ada")
    count_id = enqueue(dispatch, app, "cli.count", 7)
    fail_id = enqueue(dispatch, app, "cli.fail")

    listed = json.loads(ok(app, "jobs", "ls", "--json"))
    assert {j["id"] for j in listed} == {greet_id, count_id, fail_id}
    assert "Cancelled" in ok(app, "jobs", "cancel", count_id)
    assert "pending again" in ok(app, "jobs", "retry", count_id)

    ok(app, "worker", "--burst")
    engine = dispatch.get_engine(app)
    assert engine.get_job(greet_id).result == "Hello, Ada (attempt 1)"
    assert engine.get_job(count_id).result == {"app": "cli_app", "n": 7}
    shown = json.loads(ok(app, "jobs", "show", greet_id, "--json"))
    assert shown["state"] == "completed"

    [entry] = json.loads(ok(app, "dlq", "ls", "--json"))
    assert entry["job_id"] == fail_id
    assert "broken on purpose" in entry["error"]
    assert "Replayed 1" in ok(app, "dlq", "replay", entry["id"])

    # The worker wrote the cron entry declared on the extension.
    [cron] = json.loads(ok(app, "cron", "ls", "--json"))
    assert (cron["name"], cron["expr"]) == ("cli.nightly", "0 3 * * *")
    assert "Disabled" in ok(app, "cron", "disable", "cli.nightly")
    assert json.loads(ok(app, "cron", "ls", "--json"))[0]["enabled"] is False

    assert "Paused queue 'emails'" in ok(app, "queues", "pause", "emails")
    queues = {q["name"]: q for q in json.loads(ok(app, "queues", "--json"))}
    assert queues["emails"]["paused"] is True
    assert "Queue 'emails': concurrency 2" in ok(
        app, "queues", "set", "emails", "--concurrency", "2"
    )

    # A burst worker takes no part in the cluster: no worker row.
    assert json.loads(ok(app, "workers", "--all", "--json")) == []
    plugins = json.loads(ok(app, "plugins", "--json"))
    assert any(p["name"] for p in plugins)


def test_errors_are_one_line_unless_traceback(app: Flask) -> None:
    result = invoke(app, "jobs", "show", "job_nosuch")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "job_nosuch" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = invoke(app, "--traceback", "jobs", "show", "job_nosuch")
    assert isinstance(result.exception, JobNotFoundError)


def test_each_app_commands_see_only_its_store(
    dispatch: Dispatch, make_app: MakeApp, tmp_path: pathlib.Path
) -> None:
    @dispatch.job(name="cli.mark")
    def mark(tag: str) -> str:
        return tag

    one = make_app("one", DISPATCH_URL=f"sqlite:///{tmp_path / 'one.db'}")
    two = make_app("two", DISPATCH_URL=f"sqlite:///{tmp_path / 'two.db'}")
    with one.app_context():
        first = mark.enqueue("one")
    with two.app_context():
        second = mark.enqueue("two")
    assert [j["id"] for j in json.loads(ok(one, "jobs", "ls", "--json"))] == [first.id]
    assert [j["id"] for j in json.loads(ok(two, "jobs", "ls", "--json"))] == [second.id]
