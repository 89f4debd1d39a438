"""Eager mode (task_always_eager, task.apply): tasks run in the caller, no store involved."""

from __future__ import annotations

from typing import Any

import pytest

from dispatch_celery import Celery, EagerResult, EncodeError, states


@pytest.fixture
def eager_app() -> Celery:
    # A Celery transport URL: eager mode never builds the engine, so no store is needed.
    app = Celery("eager", broker="pyamqp://guest@localhost//")
    app.conf.task_always_eager = True
    return app


def test_delay_runs_in_the_caller(eager_app: Celery) -> None:
    calls: list[tuple[int, int]] = []

    @eager_app.task
    def add(x: int, y: int) -> int:
        calls.append((x, y))
        return x + y

    result = add.delay(2, 3)
    assert calls == [(2, 3)]  # already ran
    assert isinstance(result, EagerResult)
    assert result.state == states.SUCCESS
    assert result.ready()
    assert result.successful()
    assert result.get() == 5
    assert result.result == 5
    assert result.job() is None
    assert add.apply_async((4, 4), countdown=10, queue="q").get() == 8  # options have no effect
    assert add.apply_async((1, 1), task_id="eager-1").id == "eager-1"
    assert eager_app._engine is None  # nothing touched a store


def test_eager_retries_run_at_once(eager_app: Celery) -> None:
    seen: list[Any] = []

    @eager_app.task(bind=True, max_retries=3)
    def flaky(self: Any, n: int) -> int:
        seen.append((self.request.retries, self.request.is_eager, self.request.id))
        if self.request.retries < n:
            raise self.retry(exc=ConnectionError("down"), countdown=60)
        return int(self.request.retries)

    result = flaky.delay(2)
    assert result.get() == 2
    assert result.retries == 2
    assert [s[:2] for s in seen] == [(0, True), (1, True), (2, True)]
    assert {s[2] for s in seen} == {result.id}


def test_eager_failure_is_kept_in_the_result(eager_app: Celery) -> None:
    @eager_app.task(autoretry_for=(KeyError,), max_retries=2)
    def missing(key: str) -> None:
        raise KeyError(key)

    @eager_app.task
    def divide(x: int, y: int) -> float:
        return x / y

    result = divide.delay(1, 0)
    assert result.state == states.FAILURE
    assert result.failed()
    assert isinstance(result.result, ZeroDivisionError)
    assert result.traceback is not None
    assert "ZeroDivisionError" in result.traceback
    with pytest.raises(ZeroDivisionError):
        result.get()
    assert isinstance(result.get(propagate=False), ZeroDivisionError)

    retried = missing.delay("k")
    assert retried.retries == 2
    with pytest.raises(KeyError):
        retried.get()


def test_eager_propagates(eager_app: Celery) -> None:
    eager_app.conf.task_eager_propagates = True

    @eager_app.task
    def divide(x: int, y: int) -> float:
        return x / y

    with pytest.raises(ZeroDivisionError):
        divide.delay(1, 0)


def test_eager_checks_arguments_and_options_as_a_real_call(eager_app: Celery) -> None:
    @eager_app.task
    def echo(value: Any) -> Any:
        return value

    with pytest.raises(EncodeError, match="args\\[0\\] is a bytes"):
        echo.delay(b"raw")
    with pytest.raises(TypeError, match="'routing_key'"):
        echo.apply_async(("x",), routing_key="x")
    assert echo.delay((1, 2)).get() == [1, 2]  # arguments went through JSON

    @eager_app.task
    def opaque() -> object:
        return object()

    # A return value JSON cannot hold fails, as it would on a worker.
    with pytest.raises(EncodeError, match="the return value is a object"):
        opaque.delay().get()


def test_apply_runs_here_without_eager_mode(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.apply((1, 2))
    assert isinstance(result, EagerResult)
    assert result.get() == 3
    assert add.apply((1, None)).state == states.FAILURE
    with pytest.raises(TypeError):
        add.apply((1, None), throw=True)
