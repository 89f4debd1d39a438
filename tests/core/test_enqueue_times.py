"""When a job may be scheduled: a ``delay`` too large for a date, or a ``run_at`` no store can
keep, is a ``ValueError`` naming it at enqueue, with nothing written (issue 16: it was an
``OverflowError``, and on Redis a ``run_at`` before 1970 or past 2286 stalled every claim of its
queue)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from dispatch_core import Engine
from dispatch_core.engine import EARLIEST_RUN_AT, LATEST_RUN_AT


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    engine = Engine("memory://")

    @engine.job(name="tick")
    async def tick() -> None:
        return None

    yield engine
    await engine.aclose()


@pytest.mark.parametrize(
    "delay",
    [
        3e11,  # a timedelta, but past year 9999
        1e20,  # not even a timedelta
        math.inf,
        math.nan,
        -2e9,  # before 1970
        timedelta(days=999_999_999),
        (LATEST_RUN_AT - datetime.now(UTC)).total_seconds() + 86400,
    ],
)
async def test_a_delay_out_of_range_is_a_clear_value_error(
    engine: Engine, delay: float | timedelta
) -> None:
    with pytest.raises(ValueError, match=r"^delay .* is out of range: a job runs from 1970-01-01"):
        await engine.aenqueue("tick", delay=delay)
    with pytest.raises(ValueError, match="out of range"):  # through the definition too
        await engine.jobs["tick"].aenqueue(delay=delay)
    assert await engine.alist_jobs() == []


@pytest.mark.parametrize(
    "run_at",
    [
        datetime.min.replace(tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        LATEST_RUN_AT,
        datetime.max.replace(tzinfo=UTC),
        # No UTC form at all: year 0 and year 10000.
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
async def test_a_run_at_out_of_range_is_a_clear_value_error(
    engine: Engine, run_at: datetime
) -> None:
    with pytest.raises(ValueError, match=r"^run_at .* is out of range: a job runs from"):
        await engine.aenqueue("tick", run_at=run_at)
    assert await engine.alist_jobs() == []


async def test_the_bounds_and_ordinary_times_are_kept(engine: Engine) -> None:
    last = LATEST_RUN_AT - timedelta(microseconds=1)
    for run_at in (
        EARLIEST_RUN_AT,
        last,
        datetime(2030, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))),
    ):
        assert (await engine.aenqueue("tick", run_at=run_at)).run_at == run_at
    before = datetime.now(UTC)
    job = await engine.aenqueue("tick", delay=timedelta(days=3650))
    assert job.run_at >= before + timedelta(days=3650)
    assert (await engine.aenqueue("tick", delay=-60)).run_at < before  # trusted code may
