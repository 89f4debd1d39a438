"""app.conf.beat_schedule compiled to Dispatch cron entries, and fired by a worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

import pytest

from dispatch_celery import Celery, EncodeError, crontab
from dispatch_celery.schedules import interval_expression
from dispatch_core import CronExpressionError, UnknownJobError, Worker

RunningWorker = Callable[..., AbstractContextManager[Worker]]


@pytest.mark.parametrize(
    ("schedule", "expr"),
    [
        (crontab(), "* * * * *"),
        (crontab(minute="*/15"), "*/15 * * * *"),
        (crontab(hour=7, minute=30, day_of_week=1), "30 7 * * 1"),
        (crontab(minute=0, hour="*/3"), "0 */3 * * *"),
        (crontab(minute=0, hour=[9, 17], day_of_week="mon-fri"), "0 9,17 * * mon-fri"),
        (crontab(minute=0, hour=0, day_of_month="1", month_of_year="*/3"), "0 0 1 */3 *"),
        (crontab(0, 0, day_of_month="2-30/2"), "0 0 2-30/2 * *"),
    ],
)
def test_crontab_compiles_to_a_cron_expression(schedule: crontab, expr: str) -> None:
    assert schedule.expr == expr
    assert repr(schedule) == f"<crontab: {expr} (m/h/dM/MY/d)>"


def test_crontab_refuses_bad_fields() -> None:
    with pytest.raises(CronExpressionError):
        crontab(minute=75)
    with pytest.raises(ValueError, match="one word"):
        crontab(minute="1 2")
    with pytest.raises(TypeError, match="expected an int"):
        crontab(minute=True)
    with pytest.raises(TypeError, match="'nowfun'"):
        crontab(minute=1, nowfun=time.time)


@pytest.mark.parametrize(
    ("every", "expr"),
    [
        (1, "* * * * * *"),
        (30.0, "*/30 * * * * *"),
        (timedelta(minutes=1), "* * * * *"),
        (timedelta(minutes=15), "*/15 * * * *"),
        (3600, "0 * * * *"),
        (timedelta(hours=6), "0 */6 * * *"),
        (timedelta(days=1), "0 0 * * *"),
        (timedelta(weeks=1), "0 0 * * 0"),
    ],
)
def test_intervals_compile_when_they_divide_the_clock(every: float | timedelta, expr: str) -> None:
    assert interval_expression(every) == expr


@pytest.mark.parametrize("every", [7 * 60, 45, 0, -5, 1.5, timedelta(hours=5)])
def test_intervals_that_no_cron_expression_gives_are_refused(every: float | timedelta) -> None:
    with pytest.raises(ValueError, match="interval"):
        interval_expression(every)


def test_beat_schedule_declares_cron_entries(app: Celery) -> None:
    @app.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    app.conf.timezone = "Europe/Oslo"
    app.conf.beat_schedule = {
        "add-every-quarter": {
            "task": "tasks.add",
            "schedule": crontab(minute="*/15"),
            "args": (16, 16),
        },
        "monday-morning": {
            "task": "tasks.add",
            "schedule": crontab(hour=7, minute=30, day_of_week=1),
            "kwargs": {"x": 1, "y": 2},
            "options": {"queue": "reports", "expires": 600},
        },
        "every-30-seconds": {"task": "tasks.add", "schedule": 30.0, "args": [1, 1]},
    }
    specs = app.engine.cron_specs
    assert set(specs) == {"add-every-quarter", "monday-morning", "every-30-seconds"}
    quarter = specs["add-every-quarter"]
    assert quarter.schedule.expr == "*/15 * * * *"
    assert quarter.schedule.timezone == "Europe/Oslo"
    assert quarter.job_name == "tasks.add"
    assert quarter.payload == {"args": [16, 16], "kwargs": {}}
    monday = specs["monday-morning"]
    assert monday.schedule.expr == "30 7 * * 1"
    assert monday.queue == "reports"
    assert monday.payload == {"args": [], "kwargs": {"x": 1, "y": 2}, "expires_in": 600}
    assert specs["every-30-seconds"].schedule.expr == "*/30 * * * * *"

    # The entries reach the store when a worker starts (here: a drain).
    async def stored() -> dict[str, str]:
        try:
            await app.engine.apply_schedules()
            return {e.name: e.expr for e in await app.engine.acron_entries()}
        finally:
            await app.engine.aclose()

    assert asyncio.run(stored())["monday-morning"] == "30 7 * * 1"


@pytest.mark.parametrize(
    ("entry", "error", "match"),
    [
        ({"task": "tasks.add", "schedule": 60, "relative": True}, TypeError, "'relative'"),
        (
            {"task": "tasks.add", "schedule": 60, "options": {"exchange": "x"}},
            TypeError,
            "'exchange'",
        ),
        (
            {"task": "tasks.add", "schedule": 60, "options": {"priority": 3}},
            TypeError,
            "'priority'",
        ),
        ({"task": "tasks.add", "schedule": 60, "limit": 3}, TypeError, "key 'limit'"),
        ({"task": "tasks.add", "schedule": object()}, TypeError, "is not supported"),
        ({"task": "tasks.add", "schedule": 7 * 60}, ValueError, "divide"),
        ({"schedule": 60}, TypeError, "needs 'task'"),
        ({"task": "tasks.add"}, TypeError, "needs 'schedule'"),
        ({"task": "tasks.add", "schedule": 60, "args": [1, b"x"]}, EncodeError, "args\\[1\\]"),
        ({"task": "tasks.add", "schedule": 60, "args": [1, 2, 3]}, TypeError, "wrong arguments"),
        ({"task": "tasks.nope", "schedule": 60}, UnknownJobError, "tasks.nope"),
    ],
)
def test_beat_entries_dispatch_cannot_honour_are_refused(
    app: Celery, entry: dict[str, Any], error: type[Exception], match: str
) -> None:
    @app.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    app.conf.beat_schedule = {"entry": entry}
    with pytest.raises(error, match=match):
        app.engine  # noqa: B018 - building the engine declares the schedule


def test_the_leader_fires_beat_entries(app: Celery, running_worker: RunningWorker) -> None:
    ran: list[str] = []

    @app.task(bind=True, name="tasks.tick")
    def tick(self: Any, label: str) -> str:
        ran.append(self.request.id)
        return label

    app.conf.beat_schedule = {"tick": {"task": "tasks.tick", "schedule": 1, "args": ["beat"]}}
    with running_worker(app.engine, rescue_interval=0.2):
        deadline = time.monotonic() + 10
        while not ran and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ran, "no beat job ran"
        assert app.AsyncResult(ran[0]).get(timeout=5) == "beat"
