"""Jobs run inside their app's application context, async and sync handlers alike."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, current_app, g

from dispatch_core import CallNext, Engine, Job, JobContext, JobState
from dispatch_flask import Dispatch

MakeApp = Callable[..., Flask]


OnEngine = Callable[..., Any]


def run_jobs(on_engine: OnEngine, dispatch: Dispatch, app: Flask) -> dict[str, Any]:
    """Run every queued job of ``app`` with a worker, as ``flask dispatch worker`` would;
    return the results by job name."""

    async def drain(engine: Engine) -> list[Job]:
        await engine.drain()
        return await engine.alist_jobs()

    jobs: list[Job] = on_engine(dispatch.get_engine(app), drain)
    assert all(j.state is JobState.COMPLETED for j in jobs), [j.last_error for j in jobs]
    return {j.name: j.result for j in jobs}


def test_async_and_sync_jobs_see_current_app_and_their_own_g(
    on_engine: OnEngine, dispatch: Dispatch, make_app: MakeApp
) -> None:
    threads: dict[str, str] = {}

    @dispatch.job(name="t.async")
    async def in_async(ctx: JobContext, tag: str) -> dict[str, Any]:
        threads["async"] = threading.current_thread().name
        fresh = "tag" not in g  # no g left over from another job
        g.tag = tag
        await asyncio.sleep(0.01)  # another job runs meanwhile, with its own g
        return {"app": current_app.name, "tag": g.tag, "fresh": fresh}

    @dispatch.job(name="t.sync")
    def in_sync(tag: str) -> dict[str, Any]:
        threads["sync"] = threading.current_thread().name
        fresh = "tag" not in g
        g.tag = tag
        return {"app": current_app.name, "greeting": current_app.config["GREETING"], "fresh": fresh}

    app = make_app("jobs_app", GREETING="hello")
    in_async.enqueue("a")
    in_sync.enqueue("s")
    found = run_jobs(on_engine, dispatch, app)

    assert threads["sync"] != threads["async"]  # the sync handler ran in the thread pool
    assert found["t.async"] == {"app": "jobs_app", "tag": "a", "fresh": True}
    assert found["t.sync"] == {"app": "jobs_app", "greeting": "hello", "fresh": True}


def test_each_app_runs_its_jobs_in_its_own_context(
    on_engine: OnEngine, dispatch: Dispatch, make_app: MakeApp
) -> None:
    @dispatch.job(name="t.whoami")
    def whoami() -> str:
        return str(current_app.name)

    one, two = make_app("one"), make_app("two")
    for app in (one, two):
        with app.app_context():
            whoami.enqueue()
        assert run_jobs(on_engine, dispatch, app) == {"t.whoami": app.name}


def test_teardown_appcontext_runs_after_each_job(
    on_engine: OnEngine, dispatch: Dispatch, make_app: MakeApp
) -> None:
    torn_down: list[tuple[Any, str | None]] = []

    @dispatch.job(name="t.ok")
    def ok() -> None:
        g.resource = "ok"

    @dispatch.job(name="t.boom", max_retries=0)
    async def boom() -> None:
        g.resource = "boom"
        raise ValueError("boom")

    app = make_app()

    @app.teardown_appcontext
    def release(exc: BaseException | None) -> None:
        torn_down.append((g.get("resource"), repr(exc) if exc else None))

    ok.enqueue()
    boom.enqueue()
    on_engine(dispatch.get_engine(app), lambda e: e.drain())
    assert sorted(torn_down, key=str) == [("boom", "ValueError('boom')"), ("ok", None)]


def test_user_middleware_runs_inside_the_app_context(on_engine: OnEngine) -> None:
    seen: list[str] = []

    async def record(ctx: JobContext, call_next: CallNext) -> Any:
        seen.append(current_app.name)
        return await call_next(ctx)

    dispatch = Dispatch(middleware=[record])

    @dispatch.job(name="t.noop")
    async def noop() -> None: ...

    app = Flask("mw_app")
    app.config["DISPATCH_URL"] = "memory://"
    dispatch.init_app(app)
    engine = dispatch.get_engine(app)
    names = engine.middleware.names()
    assert names.index("flask.app_context") < names.index("user.0")
    noop.enqueue()
    run_jobs(on_engine, dispatch, app)
    assert seen == ["mw_app"]
    engine.close()


def test_without_the_middleware_a_job_has_no_app_context(
    on_engine: OnEngine, dispatch: Dispatch, make_app: MakeApp
) -> None:
    """The middleware is what provides the context (the worker does not have one)."""

    @dispatch.job(name="t.ctx", max_retries=0)
    def needs_app() -> str:
        return str(current_app.name)

    app = make_app()
    engine = dispatch.get_engine(app)

    async def passthrough(ctx: JobContext, call_next: CallNext) -> Any:
        return await call_next(ctx)

    engine.middleware.add("flask.app_context", passthrough)  # same name: replaces it
    needs_app.enqueue()
    on_engine(engine, lambda e: e.drain())
    [job] = on_engine(engine, lambda e: e.alist_jobs())
    assert job.state is JobState.FAILED
    assert job.last_error is not None
    assert "Working outside of application context" in job.last_error


@pytest.mark.parametrize("handler", ["async", "sync"])
def test_jobs_on_sqlite_run_in_the_app_context(
    on_engine: OnEngine, dispatch: Dispatch, make_app: MakeApp, sqlite_url: str, handler: str
) -> None:
    if handler == "async":

        @dispatch.job(name="t.cfg")
        async def cfg_async(key: str) -> Any:
            return current_app.config[key]

    else:

        @dispatch.job(name="t.cfg")
        def cfg_sync(key: str) -> Any:
            return current_app.config[key]

    app = make_app(DISPATCH_URL=sqlite_url, SECRET_NUMBER=42)
    job = dispatch.get_engine(app).enqueue("t.cfg", "SECRET_NUMBER")
    assert run_jobs(on_engine, dispatch, app) == {"t.cfg": 42}
    assert dispatch.get_engine(app).get_job(job.id).result == 42
