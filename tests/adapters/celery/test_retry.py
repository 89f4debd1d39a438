"""self.retry, autoretry_for and retry_backoff, run by a real worker (memory and SQLite)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from dispatch_celery import Celery, MaxRetriesExceededError, states
from dispatch_celery.task import backoff_countdown
from dispatch_core import Constant, Engine, WorkerStats

DrainFn = Callable[..., WorkerStats]


def _retry_delays(attempts: list[datetime]) -> list[float]:
    """Seconds between consecutive attempts of a job."""
    return [(b - a).total_seconds() for a, b in itertools.pairwise(attempts)]


def test_retry_with_countdown_waits_then_runs_again(app: Celery, drain: DrainFn) -> None:
    started: list[datetime] = []

    @app.task(bind=True, max_retries=3)
    def fetch(self: Any, url: str) -> str:
        started.append(datetime.now().astimezone())
        if self.request.retries < 2:
            raise self.retry(exc=ConnectionError(f"{url} unreachable"), countdown=0.3)
        return f"fetched {url} after {self.request.retries} retries"

    result = fetch.delay("https://example.com")
    stats = drain(app)
    assert stats.retried == 2
    assert stats.completed == 1
    assert result.get(timeout=1) == "fetched https://example.com after 2 retries"
    assert result.retries == 2
    delays = _retry_delays(started)
    assert len(delays) == 2
    assert all(0.28 <= d < 2.0 for d in delays), delays


def test_retry_records_the_cause_while_waiting(app: Celery, drain: DrainFn) -> None:
    @app.task(bind=True, max_retries=1)
    def fetch(self: Any) -> None:
        raise self.retry(exc=ConnectionError("upstream down"), countdown=60)

    result = fetch.delay()
    drain(app, wait_scheduled=False)
    assert result.state == states.RETRY
    assert isinstance(result.result, ConnectionError)
    assert result.traceback is not None
    assert "ConnectionError: upstream down" in result.traceback
    job = app.engine.get_job(result.id)
    assert job.finished_at is None
    assert (job.run_at - job.updated_at).total_seconds() == pytest.approx(60, abs=1)


def test_retry_past_max_retries_raises_the_exception(app: Celery, drain: DrainFn) -> None:
    @app.task(bind=True, max_retries=2, default_retry_delay=0.05)
    def always_down(self: Any) -> None:
        raise self.retry(exc=ConnectionError(f"try {self.request.retries}"))

    @app.task(bind=True, max_retries=1, default_retry_delay=0.05)
    def no_exc(self: Any) -> None:
        raise self.retry()

    first = always_down.delay()
    second = no_exc.delay()
    drain(app)
    assert first.state == states.FAILURE
    with pytest.raises(ConnectionError, match="try 2"):
        first.get(timeout=1)
    assert first.retries == 2
    with pytest.raises(MaxRetriesExceededError, match="Can't retry"):
        second.get(timeout=1)


def test_retry_with_a_lower_max_retries_fails_when_they_run_out(url: str, drain: DrainFn) -> None:
    # As in Celery: once self.retry(max_retries=1) has used its retry, the exception it
    # re-raises fails the task at once, though the task itself allows three.
    app = Celery("fast-backoff", engine=Engine(url, backoff=Constant(interval=0.01)))
    attempts: list[int] = []

    @app.task(bind=True, max_retries=3, default_retry_delay=0.01)
    def limited(self: Any) -> None:
        attempts.append(self.request.retries)
        # retry(max_retries=1) gives one retry; on the second attempt it raises the exception.
        raise self.retry(exc=ValueError(f"attempt {self.request.retries}"), max_retries=1)

    try:
        result = limited.delay()
        drain(app)
        assert attempts == [0, 1]
        assert result.state == states.FAILURE
        with pytest.raises(ValueError, match="attempt 1"):
            result.get(timeout=1)
    finally:
        app.close()


def test_retry_eta_sets_the_next_attempt(app: Celery, drain: DrainFn) -> None:
    when = datetime(2031, 5, 6, 7, 8, 9)  # naive: UTC

    @app.task(bind=True)
    def later(self: Any) -> None:
        raise self.retry(eta=when)

    result = later.delay()
    drain(app, wait_scheduled=False)
    job = app.engine.get_job(result.id)
    assert abs((job.run_at - when.replace(tzinfo=UTC)).total_seconds()) < 0.5


def test_autoretry_for_with_retry_backoff(app: Celery, drain: DrainFn) -> None:
    started: list[datetime] = []

    @app.task(
        autoretry_for=(ConnectionError,),
        retry_backoff=True,
        retry_jitter=False,
        max_retries=3,
    )
    def flaky(fail_times: int) -> int:
        started.append(datetime.now().astimezone())
        if len(started) <= fail_times:
            raise ConnectionError(f"attempt {len(started)}")
        return len(started)

    result = flaky.delay(2)
    stats = drain(app)
    assert result.get(timeout=1) == 3
    assert stats.retried == 2
    # retry_backoff=True: 1 s after the first failure, 2 s after the second (no jitter).
    # Never sooner than the countdown; the upper bounds only allow for a loaded machine.
    delays = _retry_delays(started)
    assert 0.95 <= delays[0] < 2.5, delays
    assert 1.95 <= delays[1] < 3.5, delays


def test_autoretry_for_other_exceptions_and_dont_autoretry_for(app: Celery, drain: DrainFn) -> None:
    @app.task(
        bind=True,
        autoretry_for=(LookupError,),
        dont_autoretry_for=(KeyError,),
        retry_kwargs={"countdown": 30},
        max_retries=2,
    )
    def lookup(self: Any, kind: str) -> None:
        if kind == "key":
            raise KeyError("not retried automatically")
        raise IndexError("retried automatically")

    retried = lookup.delay("index")
    not_retried = lookup.delay("key")
    drain(app, wait_scheduled=False)
    retried_job = app.engine.get_job(retried.id)
    assert retried.state == states.RETRY
    assert (retried_job.run_at - retried_job.updated_at).total_seconds() == pytest.approx(30, abs=1)
    # KeyError is not retried automatically: as in Celery, the task fails at once.
    assert not_retried.state == states.FAILURE
    assert isinstance(not_retried.result, KeyError)
    assert app.engine.get_job(not_retried.id).attempt == 1


def test_autoretry_retry_kwargs_max_retries(app: Celery, drain: DrainFn) -> None:
    calls: list[int] = []

    @app.task(
        autoretry_for=(ConnectionError,),
        retry_kwargs={"max_retries": 0},
        max_retries=0,
    )
    def once() -> None:
        calls.append(1)
        raise ConnectionError("down")

    result = once.delay()
    drain(app)
    assert calls == [1]
    with pytest.raises(ConnectionError):
        result.get(timeout=1)


def test_backoff_countdown_matches_celerys_formula() -> None:
    assert [backoff_countdown(1, r, 600, False) for r in range(5)] == [1, 2, 4, 8, 16]
    assert [backoff_countdown(3, r, 10, False) for r in range(4)] == [3, 6, 10, 10]
    random.seed(7)
    draws = [backoff_countdown(1, 4, 600, True) for _ in range(200)]
    assert min(draws) >= 0
    assert max(draws) <= 16
    assert len(set(draws)) > 5  # jitter spreads them


def test_retry_outside_a_worker(app: Celery) -> None:
    @app.task(bind=True)
    def direct(self: Any) -> None:
        raise self.retry(exc=ValueError("called directly"))

    # As in Celery: a direct call has nothing to retry, so the exception is raised.
    with pytest.raises(ValueError, match="called directly"):
        direct()
