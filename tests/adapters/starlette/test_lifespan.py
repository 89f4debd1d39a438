"""dispatch_lifespan under Starlette's TestClient (used as a context manager, so it runs)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from dispatch_core import ConfigurationError, Engine, JobState, StoreUnavailableError
from dispatch_core.testing import capture_events
from dispatch_starlette import DEFAULT_GRACE_PERIOD, dispatch_lifespan, get_dispatch

Waiter = Callable[..., None]


def job_routes(engine: Engine) -> list[Route]:
    """Routes that enqueue the engine's jobs by name and show a job's state."""

    async def enqueue(request: Request) -> JSONResponse:
        body = await request.json()
        definition = engine.get_definition(request.path_params["name"])
        job = await definition.aenqueue(body)
        return JSONResponse({"id": job.id})

    async def show(request: Request) -> JSONResponse:
        job = await get_dispatch(request).aget_job(request.path_params["job_id"])
        return JSONResponse({"state": job.state.value, "attempt": job.attempt})

    return [
        Route("/enqueue/{name}", enqueue, methods=["POST"]),
        Route("/jobs/{job_id}", show),
    ]


def job_state(client: TestClient, job_id: str) -> str:
    state: str = client.get(f"/jobs/{job_id}").json()["state"]
    return state


# -- opening, state, closing -------------------------------------------------------------------


def test_lifespan_opens_engine_yields_state_and_closes(memory_engine: Engine) -> None:
    async def where(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "request_state": request.state.dispatch is memory_engine,
                "app_state": request.app.state.dispatch is memory_engine,
                "get_dispatch": get_dispatch(request) is memory_engine,
            }
        )

    app = Starlette(routes=[Route("/", where)], lifespan=dispatch_lifespan(memory_engine))
    with capture_events(memory_engine) as captured:
        with TestClient(app) as client:
            assert captured.names() == ["engine_started"]
            assert client.get("/").json() == {
                "request_state": True,
                "app_state": True,
                "get_dispatch": True,
            }
            assert app.state.dispatch is memory_engine
        assert captured.names() == ["engine_started", "engine_shutdown"]
    assert not hasattr(app.state, "dispatch")


def test_the_same_app_can_start_twice(sqlite_engine: Engine) -> None:
    # Each TestClient runs the app in a new event loop; the engine reopens in each.
    @sqlite_engine.job(name="t.echo")
    async def echo(n: int) -> int:
        return n

    app = Starlette(routes=job_routes(sqlite_engine), lifespan=dispatch_lifespan(sqlite_engine))
    ids = []
    for n in (1, 2):
        with TestClient(app) as client:
            ids.append(client.post("/enqueue/t.echo", json=n).json()["id"])
            assert job_state(client, ids[0]) == "pending"
    assert [sqlite_engine.get_job(i).payload for i in ids] == [1, 2]


# -- composition with the user's lifespan ------------------------------------------------------


def test_user_lifespan_runs_inside_and_its_state_is_merged(
    memory_engine: Engine, caplog: pytest.LogCaptureFixture, wait_until: Waiter
) -> None:
    marks = logging.getLogger("test.user_lifespan")

    @memory_engine.job(name="t.greet")
    async def greet(name: str) -> str:
        return f"hello {name}"

    seen: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def user_lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        marks.info("user lifespan entered")
        # The engine is open and on app.state already: startup code may enqueue.
        seen["at_startup"] = await greet.aenqueue("startup")
        seen["app_state"] = app.state.dispatch
        yield {"db": "a connection pool"}
        marks.info("user lifespan exiting")

    async def state(request: Request) -> JSONResponse:
        return JSONResponse(
            {"db": request.state.db, "dispatch": request.state.dispatch is memory_engine}
        )

    app = Starlette(
        routes=[Route("/state", state), *job_routes(memory_engine)],
        lifespan=dispatch_lifespan(memory_engine, run_worker=True, lifespan=user_lifespan),
    )
    caplog.set_level(logging.INFO)
    with TestClient(app) as client:
        assert client.get("/state").json() == {"db": "a connection pool", "dispatch": True}
        startup_job = seen["at_startup"].id
        wait_until(lambda: job_state(client, startup_job) == "completed", what="startup job")
    assert seen["app_state"] is memory_engine

    order = [
        m
        for r in caplog.records
        for m in ("user lifespan entered", "user lifespan exiting", "starting", "stopped:")
        if m in r.getMessage()
    ]
    # The worker starts after the user's startup and stops before the user's shutdown, so
    # jobs may use what the user's lifespan set up.
    assert order == ["user lifespan entered", "starting", "stopped:", "user lifespan exiting"]


def test_stateless_user_lifespan(memory_engine: Engine) -> None:
    calls: list[str] = []

    @contextlib.asynccontextmanager
    async def user_lifespan(app: Starlette) -> AsyncIterator[None]:
        calls.append("enter")
        yield
        calls.append("exit")

    async def keys(request: Request) -> JSONResponse:
        return JSONResponse(sorted(request.scope["state"]))

    app = Starlette(
        routes=[Route("/", keys)],
        lifespan=dispatch_lifespan(memory_engine, lifespan=user_lifespan),
    )
    with TestClient(app) as client:
        assert client.get("/").json() == ["dispatch"]
    assert calls == ["enter", "exit"]


def test_user_state_may_not_take_the_dispatch_key(memory_engine: Engine) -> None:
    @contextlib.asynccontextmanager
    async def user_lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {"dispatch": "mine"}

    app = Starlette(lifespan=dispatch_lifespan(memory_engine, lifespan=user_lifespan))
    with capture_events(memory_engine) as captured:
        with pytest.raises(ConfigurationError, match="yields a 'dispatch' key"), TestClient(app):
            pass
        assert captured.names() == ["engine_started", "engine_shutdown"]


def test_user_lifespan_must_yield_a_mapping(memory_engine: Engine) -> None:
    @contextlib.asynccontextmanager
    async def user_lifespan(app: Starlette) -> AsyncIterator[Any]:
        yield ["not", "a", "mapping"]

    app = Starlette(lifespan=dispatch_lifespan(memory_engine, lifespan=user_lifespan))
    with pytest.raises(TypeError, match=r"must yield a mapping .* not a list"), TestClient(app):
        pass


def test_failing_user_startup_closes_the_engine(memory_engine: Engine) -> None:
    @contextlib.asynccontextmanager
    async def user_lifespan(app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("cache server unreachable")
        yield

    app = Starlette(
        lifespan=dispatch_lifespan(memory_engine, run_worker=True, lifespan=user_lifespan)
    )
    with capture_events(memory_engine) as captured:
        with pytest.raises(RuntimeError, match="cache server unreachable"), TestClient(app):
            pass
        assert captured.names() == ["engine_started", "engine_shutdown"]
    assert not hasattr(app.state, "dispatch")


# -- startup failures and bad arguments --------------------------------------------------------


def test_store_that_cannot_open_fails_startup(tmp_path: Any) -> None:
    pytest.importorskip("dispatch_plugins.sqlite")
    engine = Engine(f"sqlite:///{tmp_path}/missing-dir/jobs.db")
    entered: list[bool] = []

    @contextlib.asynccontextmanager
    async def user_lifespan(app: Starlette) -> AsyncIterator[None]:
        entered.append(True)
        yield

    app = Starlette(lifespan=dispatch_lifespan(engine, run_worker=True, lifespan=user_lifespan))
    with pytest.raises(StoreUnavailableError) as raised, TestClient(app):
        pass
    message = str(raised.value)
    assert message.startswith("app startup failed: Dispatch cannot open its store: ")
    assert "missing-dir" in message
    assert entered == []
    assert not hasattr(app.state, "dispatch")


def test_engine_must_be_an_engine() -> None:
    with pytest.raises(TypeError, match=r"needs a dispatch_core\.Engine, got str"):
        dispatch_lifespan("sqlite:///jobs.db")  # type: ignore[call-overload]


def test_worker_options_need_run_worker(memory_engine: Engine) -> None:
    with pytest.raises(ConfigurationError, match=r"worker_options=\.\.\.\) needs run_worker=True"):
        dispatch_lifespan(memory_engine, worker_options={"concurrency": 2})


def test_unknown_worker_option_is_refused_at_once(memory_engine: Engine) -> None:
    with pytest.raises(TypeError, match=r"worker_options=\.\.\.\).*'concurency'"):
        dispatch_lifespan(memory_engine, run_worker=True, worker_options={"concurency": 2})


def test_impossible_worker_option_is_refused_at_once(memory_engine: Engine) -> None:
    with pytest.raises(ConfigurationError, match=r"concurrency must be >= 1, got 0"):
        dispatch_lifespan(memory_engine, run_worker=True, worker_options={"concurrency": 0})


# -- the in-process worker ---------------------------------------------------------------------


def test_in_process_worker_runs_enqueued_jobs(memory_engine: Engine, wait_until: Waiter) -> None:
    @memory_engine.job(name="t.double")
    async def double(n: int) -> int:
        return 2 * n

    app = Starlette(
        routes=job_routes(memory_engine),
        lifespan=dispatch_lifespan(
            memory_engine, run_worker=True, worker_options={"queues": ["default"]}
        ),
    )
    with TestClient(app) as client:
        ids = [client.post("/enqueue/t.double", json=n).json()["id"] for n in range(5)]
        wait_until(lambda: all(job_state(client, i) == "completed" for i in ids), what="jobs")
        assert [memory_engine.get_job(i).result for i in ids] == [0, 2, 4, 6, 8]


def test_no_worker_runs_unless_asked(memory_engine: Engine) -> None:
    @memory_engine.job(name="t.noop")
    async def noop(n: int) -> None:
        return None

    app = Starlette(routes=job_routes(memory_engine), lifespan=dispatch_lifespan(memory_engine))
    with TestClient(app) as client:
        job_id = client.post("/enqueue/t.noop", json=1).json()["id"]
        time.sleep(0.3)  # an in-process worker would have run it by now
        assert job_state(client, job_id) == "pending"


def test_shutdown_lets_a_running_job_finish_within_the_grace(
    sqlite_engine: Engine, wait_until: Waiter
) -> None:
    @sqlite_engine.job(name="t.slow")
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    app = Starlette(
        routes=job_routes(sqlite_engine),
        lifespan=dispatch_lifespan(sqlite_engine, run_worker=True),
    )
    with TestClient(app) as client:
        job_id = client.post("/enqueue/t.slow", json=0.5).json()["id"]
        wait_until(lambda: job_state(client, job_id) == "running", what="the job to start")
    # Leaving the block ran the shutdown, which waited for the job.
    job = sqlite_engine.get_job(job_id)
    assert (job.state, job.result, job.attempt) == (JobState.COMPLETED, "done", 1)


def test_shutdown_after_the_grace_releases_running_jobs_only(
    sqlite_engine: Engine, wait_until: Waiter
) -> None:
    @sqlite_engine.job(name="t.quick")
    async def quick(n: int) -> int:
        return n

    @sqlite_engine.job(name="t.stuck")
    async def stuck(seconds: float) -> None:
        await asyncio.sleep(seconds)

    app = Starlette(
        routes=job_routes(sqlite_engine),
        lifespan=dispatch_lifespan(
            sqlite_engine, run_worker=True, worker_options={"grace_period": 0.2}
        ),
    )
    with TestClient(app) as client:
        done_id = client.post("/enqueue/t.quick", json=7).json()["id"]
        stuck_id = client.post("/enqueue/t.stuck", json=60.0).json()["id"]
        wait_until(lambda: job_state(client, done_id) == "completed", what="the quick job")
        wait_until(lambda: job_state(client, stuck_id) == "running", what="the stuck job")
        started = time.monotonic()
    assert time.monotonic() - started < 5.0  # the grace, not the job's 60 s

    done = sqlite_engine.get_job(done_id)
    assert (done.state, done.result, done.attempt) == (JobState.COMPLETED, 7, 1)
    # Released, not failed: back to pending, and the interrupted attempt is not counted.
    released = sqlite_engine.get_job(stuck_id)
    assert (released.state, released.attempt, released.worker_id) == (JobState.PENDING, 0, None)


def test_default_grace_period_of_the_in_process_worker(
    memory_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    app = Starlette(lifespan=dispatch_lifespan(memory_engine, run_worker=True))
    caplog.set_level(logging.INFO, logger="dispatch_starlette")
    with TestClient(app):
        pass
    stopping = [r.getMessage() for r in caplog.records if "stopping in-process" in r.getMessage()]
    assert len(stopping) == 1
    assert stopping[0].endswith(f"running jobs get up to {DEFAULT_GRACE_PERIOD:g}s")


def test_a_worker_that_dies_is_reported_and_the_app_keeps_serving(
    memory_engine: Engine,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    wait_until: Waiter,
) -> None:
    async def broken_listen(wake: Callable[[], None]) -> None:
        raise OSError("listener socket closed")

    monkeypatch.setattr(memory_engine.store, "listen", broken_listen)

    async def ok(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[Route("/", ok)], lifespan=dispatch_lifespan(memory_engine, run_worker=True)
    )
    with TestClient(app) as client:
        wait_until(
            lambda: any("ended while the app still runs" in r.getMessage() for r in caplog.records),
            what="the worker's death to be logged",
        )
        assert client.get("/").json() == {"ok": True}
    [record] = [r for r in caplog.records if "ended while the app still runs" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert "listener socket closed" in str(record.exc_info[1])
