"""Job declarations made before the app exists, and enqueueing through the current app."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any, assert_type

import attrs
import pytest
from flask import Flask, request

from dispatch_core import (
    ConfigurationError,
    CronExpressionError,
    Job,
    JobContext,
    JobDefinition,
    JobState,
    PayloadError,
    SyncInAsyncContextError,
)
from dispatch_flask import Dispatch, FlaskJob

MakeApp = Callable[..., Flask]
OnEngine = Callable[..., Any]


@attrs.frozen
class Welcome:
    user_id: int
    email: str


def declare_jobs(dispatch: Dispatch) -> dict[str, FlaskJob[Any]]:
    """Jobs as a tasks module declares them, typed as mypy sees them."""

    @dispatch.job
    async def bare(msg: Welcome) -> str:
        return msg.email

    @dispatch.job(name="t.with_ctx", queue="emails", max_retries=1, priority=5)
    async def with_ctx(ctx: JobContext, msg: Welcome) -> int:
        return ctx.attempt

    @dispatch.job(name="t.numbers")
    def numbers(values: list[int]) -> int:
        return sum(values)

    @dispatch.job(name="t.tick")
    def tick() -> str:
        return "tock"

    @dispatch.cron("0 3 * * *", name="t.nightly")
    async def nightly(ctx: JobContext) -> None: ...

    # The payload type survives the decorators (checked by mypy; no-ops at run time).
    assert_type(bare, FlaskJob[Welcome])
    assert_type(with_ctx, FlaskJob[Welcome])
    assert_type(numbers, FlaskJob[list[int]])
    assert_type(tick, FlaskJob[None])
    assert_type(nightly, FlaskJob[None])
    return {
        "bare": bare,
        "with_ctx": with_ctx,
        "numbers": numbers,
        "tick": tick,
        "nightly": nightly,
    }


def _typed_calls(job: FlaskJob[Welcome], numbers: FlaskJob[list[int]]) -> None:
    """Never called: mypy checks the enqueue signatures."""
    assert_type(job.definition(), JobDefinition[Welcome])
    assert_type(job.enqueue(Welcome(1, "a@x"), delay=5, unique_key="k"), Job)
    assert_type(numbers.enqueue_many([[1], [2, 3]]), list[Job])
    job.enqueue("not a Welcome")  # type: ignore[arg-type]


def test_jobs_declared_before_the_app_are_registered_on_it(
    dispatch: Dispatch, make_app: MakeApp
) -> None:
    jobs = declare_jobs(dispatch)
    app = make_app()
    engine = dispatch.get_engine(app)
    assert jobs["bare"].name.endswith("test_jobs.declare_jobs.<locals>.bare")  # module.qualname
    assert set(engine.jobs) == {
        jobs["bare"].name,
        "t.with_ctx",
        "t.numbers",
        "t.tick",
        "t.nightly",
    }
    definition = jobs["with_ctx"].definition(app)
    assert definition.engine is engine
    assert (definition.queue, definition.max_retries, definition.priority) == ("emails", 1, 5)
    assert "t.nightly" in engine.cron_specs
    assert engine.cron_specs["t.nightly"].schedule.expr == "0 3 * * *"


def test_a_job_declared_after_init_app_reaches_the_existing_apps(
    dispatch: Dispatch, make_app: MakeApp
) -> None:
    one, two = make_app("one"), make_app("two")

    @dispatch.job(name="t.late")
    def late(n: int) -> int:
        return n

    assert late.definition(one).engine is dispatch.get_engine(one)
    assert late.definition(two).engine is dispatch.get_engine(two)
    three = make_app("three")
    assert "t.late" in dispatch.get_engine(three).jobs


def test_enqueue_writes_through_the_current_app_engine(
    dispatch: Dispatch, make_app: MakeApp
) -> None:
    jobs = declare_jobs(dispatch)
    app = make_app()
    with app.app_context():
        job = jobs["with_ctx"].enqueue(Welcome(1, "a@x"), delay=60, unique_key="w-1")
        again = jobs["with_ctx"].enqueue(Welcome(1, "a@x"), unique_key="w-1")
        none = jobs["tick"].enqueue()
        many = jobs["numbers"].enqueue_many([[1], [2, 3]])
    assert again.id == job.id  # the idempotency key holds
    assert (job.name, job.queue, job.priority, job.max_attempts) == ("t.with_ctx", "emails", 5, 2)
    assert job.payload == {"user_id": 1, "email": "a@x"}
    assert job.run_at > job.created_at
    assert none.payload is None
    assert [j.payload for j in many] == [[1], [2, 3]]
    # Outside an app context, the only app is used.
    stored = dispatch.get_engine(app).get_job(job.id)
    assert stored.state is JobState.PENDING


def test_every_core_enqueue_option_reaches_the_engine(
    dispatch: Dispatch, make_app: MakeApp
) -> None:
    # The options are defined once (EnqueueOptions): job_id, missing here before, works.
    jobs = declare_jobs(dispatch)
    app = make_app()
    with app.app_context():
        job = jobs["with_ctx"].enqueue(
            Welcome(1, "a@x"), job_id="order-7", headers={"h": "v"}, tenant="acme"
        )
        again = asyncio.run(
            jobs["with_ctx"].aenqueue(Welcome(1, "a@x"), job_id="order-7", tenant="acme")
        )
        with pytest.raises(TypeError, match=r"unknown enqueue option.*jobid"):
            jobs["with_ctx"].enqueue(Welcome(1, "a@x"), jobid="x")  # type: ignore[call-arg]
    assert job.id == again.id == "order-7"
    assert (job.headers, job.tenant) == ({"h": "v"}, "acme")


def test_a_bad_payload_is_refused_at_enqueue(
    on_engine: OnEngine, dispatch: Dispatch, make_app: MakeApp
) -> None:
    jobs = declare_jobs(dispatch)
    app = make_app()
    with pytest.raises(PayloadError, match=r"required field missing @ \$.email"):
        jobs["bare"].enqueue({"user_id": 1})
    with pytest.raises(PayloadError, match="required payload missing"):
        jobs["bare"].enqueue()
    assert sum(on_engine(dispatch.get_engine(app), lambda e: e.acount_jobs()).values()) == 0


def test_calling_the_job_calls_the_handler(dispatch: Dispatch) -> None:
    jobs = declare_jobs(dispatch)
    assert jobs["numbers"]([1, 2, 3]) == 6
    assert jobs["tick"]() == "tock"
    assert jobs["numbers"].__name__ == "numbers"


def test_a_bad_handler_or_cron_is_refused_at_declaration(
    dispatch: Dispatch, make_app: MakeApp
) -> None:
    with pytest.raises(ConfigurationError, match="takes several payload parameters"):

        @dispatch.job  # type: ignore[arg-type]  # mypy refuses it too
        def two(a: int, b: int) -> None: ...

    with pytest.raises(CronExpressionError):
        dispatch.cron("every day at noon")
    with pytest.raises(ConfigurationError, match=r"takes a payload; use dispatch\.schedule"):

        @dispatch.cron("@daily")
        def with_payload(n: int) -> None: ...

    assert dispatch.get_engine(make_app()).jobs == {}  # nothing half-declared


def test_schedule_and_queue_declarations_replay_on_each_app(
    dispatch: Dispatch, make_app: MakeApp
) -> None:
    jobs = declare_jobs(dispatch)
    dispatch.schedule("weekly-numbers", "@weekly", jobs["numbers"], [1, 2])
    dispatch.queue("emails", concurrency=2)
    app = make_app()
    engine = dispatch.get_engine(app)
    assert engine.cron_specs["weekly-numbers"].payload == [1, 2]
    assert engine.cron_specs["weekly-numbers"].job_name == "t.numbers"
    with pytest.raises(ConfigurationError, match="declared on another Dispatch instance"):
        Dispatch().schedule("x", "@daily", jobs["tick"])


def test_a_job_name_taken_twice_is_refused_when_the_app_binds(
    dispatch: Dispatch, make_app: MakeApp
) -> None:
    @dispatch.job(name="t.same")
    def first() -> None: ...

    @dispatch.job(name="t.same")
    def second() -> None: ...

    with pytest.raises(ConfigurationError, match=r"'t\.same' is already registered"):
        make_app()


def test_sync_enqueue_inside_an_event_loop_names_the_async_twin(
    dispatch: Dispatch, make_app: MakeApp
) -> None:
    jobs = declare_jobs(dispatch)
    make_app()

    async def inside_a_loop() -> None:
        jobs["tick"].enqueue()

    with pytest.raises(SyncInAsyncContextError, match="aenqueue"):
        asyncio.run(inside_a_loop())


def test_an_async_view_enqueues_with_aenqueue(
    on_engine: OnEngine, dispatch: Dispatch, make_app: MakeApp
) -> None:
    pytest.importorskip("asgiref")  # Flask's async views need flask[async]
    jobs = declare_jobs(dispatch)
    app = make_app()

    @app.post("/welcome")
    async def welcome() -> dict[str, str]:
        one = await jobs["with_ctx"].aenqueue(Welcome(**request.get_json()))
        many = await jobs["numbers"].aenqueue_many([[1], [2]])
        return {"id": one.id, "many": ",".join(j.id for j in many)}

    # Each async view runs on an event loop of its own: two requests, two loops.
    client = app.test_client()
    ids = [client.post("/welcome", json={"user_id": n, "email": "a@x"}).json for n in (1, 2)]
    engine = dispatch.get_engine(app)
    for body in ids:
        assert body is not None
        assert engine.get_job(body["id"]).state is JobState.PENDING
        assert len(body["many"].split(",")) == 2
    assert on_engine(engine, lambda e: e.acount_jobs())[JobState.PENDING] == 6


def test_a_job_enqueues_another_through_the_same_engine(
    on_engine: OnEngine, dispatch: Dispatch, make_app: MakeApp
) -> None:
    @dispatch.job(name="t.child")
    async def child(n: int) -> int:
        return n * 2

    @dispatch.job(name="t.parent")
    async def parent(n: int) -> str:
        job = await child.aenqueue(n)  # inside a job: the engine's own async path
        return job.id

    app = make_app()
    parent.enqueue(21)
    engine = dispatch.get_engine(app)
    on_engine(engine, lambda e: e.drain())
    [child_job] = on_engine(engine, lambda e: e.alist_jobs(name="t.child"))
    assert child_job.state is JobState.COMPLETED
    assert child_job.result == 42


def test_a_job_of_a_script_run_as_main_is_named_after_its_module(
    dispatch: Dispatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m shop.tasks`` declares its jobs in ``__main__``: they get the name a worker
    importing ``shop.tasks`` registers, as core jobs do."""

    class Spec:
        name = "shop.tasks"

    class Main:
        __spec__ = Spec()

    monkeypatch.setitem(sys.modules, "__main__", Main())

    def charge() -> None: ...

    def nightly() -> None: ...

    charge.__module__ = nightly.__module__ = "__main__"
    assert (
        dispatch.job(charge).name
        == "shop.tasks.test_a_job_of_a_script_run_as_main_is_named_after_its_module.<locals>.charge"
    )
    assert dispatch.cron("@daily")(nightly).name.startswith("shop.tasks.")


def test_internal_and_operator_only_reach_the_engine(dispatch: Dispatch, make_app: MakeApp) -> None:
    @dispatch.job(name="t.plumbing", internal=True)
    def plumbing() -> None: ...

    @dispatch.job(name="t.billing", operator_only=True)
    def billing() -> None: ...

    engine = dispatch.get_engine(make_app())
    assert engine.jobs["t.plumbing"].internal
    assert not engine.jobs["t.plumbing"].operator_only
    assert engine.jobs["t.billing"].operator_only
    assert not engine.jobs["t.billing"].internal
