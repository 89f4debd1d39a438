"""Registering tasks, calling them (delay, apply_async, send_task) and reading results,
against the memory store and SQLite."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dispatch_celery import AsyncResult, Celery, EncodeError, Task, shared_task, states
from dispatch_celery.exceptions import (
    TaskFailedError,
    TaskRevokedError,
    TimeoutError as CeleryTimeoutError,
)
from dispatch_core import JobState, Worker, WorkerStats

# The types of the conftest fixtures `drain` and `running_worker`.
DrainFn = Callable[..., WorkerStats]
RunningWorker = Callable[..., AbstractContextManager[Worker]]


def test_task_with_and_without_parentheses(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task()
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task(name="math.power")
    def power(x: int, y: int) -> int:
        return int(x**y)

    assert isinstance(add, Task)
    assert add.name == f"{__name__}.add"
    assert mul.name == f"{__name__}.mul"
    assert power.name == "math.power"
    assert {add.name, mul.name, "math.power"} <= set(app.tasks)
    assert add(2, 3) == 5  # a direct call runs the function here
    assert set(app.engine.jobs) == set(app.tasks)  # every task is a Dispatch job


def test_task_options_dispatch_honours_by_design(app: Celery) -> None:
    # acks_late is how Dispatch always works (leases); results are always kept and running
    # jobs always tracked. These options are accepted and keep their values.
    @app.task(acks_late=True, ignore_result=True, track_started=True, serializer="json")
    def work() -> None: ...

    assert work.acks_late is True
    assert work.ignore_result is True
    assert work.track_started is True
    definition = app.engine.jobs[work.name]
    assert definition.queue == "celery"  # Celery's default queue name
    assert definition.max_retries == 3  # Celery's default
    assert definition.timeout is None  # no time limit, as in Celery


def test_delay_runs_on_a_worker_and_get_returns_the_value(app: Celery, drain: DrainFn) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(2, 3)
    assert isinstance(result, AsyncResult)
    assert result.id.startswith("job_")
    assert result.state == states.PENDING
    assert not result.ready()
    assert result.result is None

    stats = drain(app)
    assert stats.completed == 1
    assert result.state == result.status == states.SUCCESS
    assert result.ready()
    assert result.successful()
    assert not result.failed()
    assert result.result == 5
    assert result.get(timeout=1) == 5
    assert result.name == add.name
    assert result.args == [2, 3]
    assert result.kwargs == {}
    assert result.date_done is not None


def test_a_chosen_task_id_is_the_job_id_and_sends_once(app: Celery, drain: DrainFn) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    task_id = "4ad9d1c3-0b53-4bd6-9a74-0f4b8e1d7a3b"
    result = add.apply_async((2, 3), task_id=task_id)
    assert result.id == task_id
    again = app.send_task(add.name, (20, 30), task_id=task_id)
    assert again.id == task_id
    stats = drain(app)
    assert stats.completed == 1  # the same id sent twice is one job
    assert AsyncResult(task_id, app=app).get(timeout=1) == 5
    with pytest.raises(TypeError, match="task_id must be a non-empty string"):
        add.apply_async((1, 1), task_id="two words")


def test_get_polls_until_a_worker_finishes(app: Celery, running_worker: RunningWorker) -> None:
    @app.task
    def slow_add(x: int, y: int) -> int:
        time.sleep(0.2)
        return x + y

    result = slow_add.delay(20, 22)
    with running_worker(app.engine):
        assert result.get(timeout=10) == 42
        again = AsyncResult(result.id, app=app)  # found again by id, as in another process
        assert again.get(timeout=1) == 42
        assert app.AsyncResult(result.id) == result


def test_arguments_travel_as_json(app: Celery, drain: DrainFn) -> None:
    seen: list[Any] = []

    @app.task
    def record(items: list[int], *, label: str, meta: dict[str, Any]) -> dict[str, Any]:
        seen.append((items, label, meta))
        return {"n": len(items), "label": label}

    result = record.apply_async(((1, 2),), {"label": "x", "meta": {"a": (1, None)}})
    drain(app)
    # Tuples become lists, as with Celery's JSON serializer.
    assert seen == [([1, 2], "x", {"a": [1, None]})]
    assert result.get(timeout=1) == {"n": 2, "label": "x"}


def test_a_non_json_argument_is_refused_at_enqueue_naming_it(app: Celery) -> None:
    @app.task
    def add(x: Any, y: Any) -> Any:
        return x + y

    with pytest.raises(EncodeError, match=r"argument 'y': args\[1\] is a Decimal"):
        add.delay(1, __import__("decimal").Decimal("2.5"))
    with pytest.raises(EncodeError, match=r"argument 'y': kwargs\['y'\]\['when'\] is a datetime"):
        add.delay(1, y={"when": datetime.now(UTC)})
    with pytest.raises(EncodeError, match="pickle is not supported"):
        add.delay({1, 2}, 3)
    with pytest.raises(TypeError, match="wrong arguments"):
        add.delay(1, 2, 3)  # type: ignore[call-arg]
    assert app.AsyncResult("job_unknown").state == states.PENDING
    assert _count_jobs(app) == 0  # nothing was written


def test_a_non_json_return_value_fails_the_task(app: Celery, drain: DrainFn) -> None:
    @app.task(max_retries=0)
    def when() -> object:
        return object()

    result = when.delay()
    drain(app)
    assert result.state == states.FAILURE
    # EncodeError's constructor does not take the bare message: the error comes back as a
    # TaskFailedError that names the original type.
    with pytest.raises(TaskFailedError, match="the return value is a object") as info:
        result.get(timeout=1)
    assert info.value.exc_type == "dispatch_celery.exceptions.EncodeError"
    assert "results are stored as JSON" in info.value.traceback


def test_apply_async_options_reach_the_job(app: Celery) -> None:
    @app.task(queue="math", priority=1, time_limit=30)
    def add(x: int, y: int) -> int:
        return x + y

    engine = app.engine
    plain = engine.get_job(add.delay(1, 2).id)
    assert (plain.queue, plain.priority, plain.timeout) == ("math", 1, 30)

    before = datetime.now(UTC)
    later = engine.get_job(add.apply_async((1, 2), countdown=60, queue="slow", priority=7).id)
    assert later.queue == "slow"
    assert later.priority == 7
    assert later.run_at >= before + timedelta(seconds=60)

    eta = datetime(2031, 1, 2, 3, 4, 5)  # naive: read as UTC, as Celery does
    at_eta = engine.get_job(add.apply_async((1, 2), eta=eta, time_limit=5).id)
    assert at_eta.run_at == eta.replace(tzinfo=UTC)
    assert at_eta.timeout == 5

    default = engine.get_job(app.send_task(add.name, (3, 4)).id)
    assert default.queue == "math"

    with pytest.raises(ValueError, match="countdown or eta"):
        add.apply_async((1, 2), countdown=1, eta=eta)


def test_a_task_not_started_before_expires_is_revoked_not_run(app: Celery, drain: DrainFn) -> None:
    calls: list[int] = []

    @app.task
    def once(n: int) -> int:
        calls.append(n)
        return n

    expired = once.apply_async((1,), countdown=0.3, expires=0.1)
    on_time = once.apply_async((2,), expires=60)
    by_date = once.apply_async((3,), expires=datetime.now(UTC) - timedelta(seconds=1))
    drain(app)
    assert calls == [2]
    assert expired.state == by_date.state == states.REVOKED
    assert on_time.get(timeout=1) == 2
    with pytest.raises(TaskRevokedError):
        expired.get(timeout=1)
    assert isinstance(expired.get(timeout=1, propagate=False), TaskRevokedError)


def test_failure_reraises_the_original_exception(app: Celery, drain: DrainFn) -> None:
    @app.task(max_retries=0)
    def divide(x: int, y: int) -> float:
        return x / y

    result = divide.delay(1, 0)
    drain(app)
    assert result.state == states.FAILURE
    assert result.failed()
    assert result.ready()
    assert not result.successful()
    with pytest.raises(ZeroDivisionError, match="division by zero"):
        result.get(timeout=1)
    error = result.get(timeout=1, propagate=False)
    assert isinstance(error, ZeroDivisionError)
    assert isinstance(result.result, ZeroDivisionError)
    assert result.traceback is not None
    assert "return x / y" in result.traceback


class PaymentDeclined(Exception):
    """A failure type of the application's own."""


def test_failure_with_an_application_exception_type(app: Celery, drain: DrainFn) -> None:
    @app.task(max_retries=0)
    def charge(cents: int) -> None:
        raise PaymentDeclined(f"card declined for {cents}")

    result = charge.delay(500)
    drain(app)
    # This module is imported here, so the type is rebuilt from the recorded error.
    with pytest.raises(PaymentDeclined, match="card declined for 500"):
        result.get(timeout=1)


def test_get_times_out_with_celerys_error(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(1, 1)
    started = time.monotonic()
    with pytest.raises(CeleryTimeoutError):
        result.get(timeout=0.2, interval=0.05)
    assert 0.15 < time.monotonic() - started < 2
    assert issubclass(CeleryTimeoutError, TimeoutError)


def test_get_inside_a_task_is_refused(app: Celery, drain: DrainFn) -> None:
    @app.task
    def inner() -> int:
        return 1

    @app.task(max_retries=0)
    def outer(job_id: str) -> Any:
        return AsyncResult(job_id, app=app).get(timeout=1)

    first = inner.delay()
    result = outer.delay(first.id)
    drain(app)
    with pytest.raises(RuntimeError, match=r"Never call result.get\(\) within a task"):
        result.get(timeout=1)


def test_revoke_cancels_a_waiting_task(app: Celery, drain: DrainFn) -> None:
    calls: list[int] = []

    @app.task
    def work(n: int) -> None:
        calls.append(n)

    result = work.apply_async((1,), countdown=0.2)
    result.revoke()
    drain(app)
    assert calls == []
    assert result.state == states.REVOKED
    result.revoke()  # a finished task is left as it is, as in Celery
    AsyncResult("job_unknown", app=app).revoke()


def test_bound_task_sees_its_request(app: Celery, running_worker: RunningWorker) -> None:
    seen: list[Any] = []

    @app.task(bind=True, queue="inspect")
    def inspect_request(self: Any, x: int, *, y: int = 0) -> str:
        request = self.request
        seen.append(request)
        assert self is inspect_request
        return str(request.id)

    assert inspect_request.request.called_directly  # outside an execution
    with running_worker(app.engine) as worker:
        result = inspect_request.apply_async((1,), {"y": 2})
        assert result.get(timeout=10) == result.id
    [request] = seen
    assert request.id == result.id
    assert request.task == inspect_request.name
    assert request.args == (1,)
    assert request.kwargs == {"y": 2}
    assert request.retries == 0
    assert not request.called_directly
    assert not request.is_eager
    assert request.hostname == worker.id
    assert request.delivery_info == {"queue": "inspect"}


def test_send_task_by_name(app: Celery, drain: DrainFn) -> None:
    @app.task(name="remote.add")
    def add(x: int, y: int) -> int:
        return x + y

    result = app.send_task("remote.add", args=[5], kwargs={"y": 6})
    drain(app)
    assert result.get(timeout=1) == 11
    with pytest.raises(TypeError, match="wrong arguments"):
        app.send_task("remote.add", args=[1, 2, 3])


def test_send_task_of_a_task_registered_only_on_the_workers(url: str, drain: DrainFn) -> None:
    producer = Celery("producer", broker=url)
    if url.startswith("memory:"):
        worker_side = Celery("workers", engine=producer.engine)  # one in-process store
    else:
        worker_side = Celery("workers", broker=url)
    try:
        result = producer.send_task("billing.invoice", args=[42])
        assert result.state == states.PENDING
        assert "billing.invoice" not in producer.engine.jobs  # its workers cannot claim it
        drain(producer)
        assert result.state == states.PENDING  # no worker here knows it, as in Celery

        @worker_side.task(name="billing.invoice")
        def invoice(order: int) -> str:
            return f"invoice {order}"

        drain(worker_side)
        assert result.get(timeout=1) == "invoice 42"
    finally:
        producer.close()
        worker_side.close()


@shared_task(name="lib.double")
def double(x: int) -> int:
    """A library task, defined before any app of the test exists."""
    return 2 * x


def test_shared_task_uses_the_current_app(url: str, drain: DrainFn) -> None:
    app = Celery("uses-lib", broker=url)
    try:
        # A shared task defined once an app exists is added to it too.
        @shared_task(bind=True, name=f"lib.whoami.{url[:6]}")
        def whoami(self: Any) -> str:
            return str(self.app.main)

        assert {"lib.double", whoami.name} <= set(app.tasks)
        assert double.app is app
        first = double.delay(21)
        second = whoami.delay()
        drain(app)
        assert first.get(timeout=1) == 42
        assert second.get(timeout=1) == "uses-lib"
    finally:
        app.close()


async def test_async_twins(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = await add.adelay(1, 2)
    other = await add.aapply_async((3, 4), countdown=0)
    await app.engine.drain()
    assert await result.aget(timeout=1) == 3
    assert await other.aget(timeout=1) == 7
    assert (await result.ajob()) is not None
    await app.engine.aclose()


def test_job_states_map_onto_celery_states(app: Celery, running_worker: RunningWorker) -> None:
    release = threading.Event()
    attempts: list[int] = []

    @app.task(bind=True, max_retries=1)
    def gated(self: Any) -> str:
        attempts.append(self.request.retries)
        if self.request.retries == 0:
            raise self.retry(exc=ConnectionError("not yet"), countdown=0.5)
        release.wait(10)
        return "done"

    result = gated.delay()
    assert result.state == states.PENDING
    with running_worker(app.engine):
        _wait_for(lambda: result.state == states.RETRY)
        assert isinstance(result.result, ConnectionError)  # the retried attempt's error
        _wait_for(lambda: result.state == states.STARTED)
        assert not result.ready()
        release.set()
        assert result.get(timeout=10) == "done"
    assert result.state == states.SUCCESS
    assert result.retries == 1


@pytest.mark.parametrize(
    ("job_state", "celery_state"),
    [
        (JobState.PENDING, "PENDING"),
        (JobState.RUNNING, "STARTED"),
        (JobState.RETRYING, "RETRY"),
        (JobState.COMPLETED, "SUCCESS"),
        (JobState.FAILED, "FAILURE"),
        (JobState.CANCELLED, "REVOKED"),
    ],
)
def test_state_mapping(job_state: JobState, celery_state: str) -> None:
    assert states.from_job_state(job_state) == celery_state
    assert (celery_state in states.READY_STATES) == (
        job_state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
    )


def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _count_jobs(app: Celery) -> int:
    import asyncio

    async def count() -> int:
        try:
            return sum((await app.engine.acount_jobs()).values())
        finally:
            await app.engine.aclose()

    return asyncio.run(count())
