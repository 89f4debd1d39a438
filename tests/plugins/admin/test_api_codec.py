"""The JSON codec (every model there and back) and the cursor helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from dispatch_core import (
    CronEntry,
    DLQEntry,
    Job,
    JobState,
    QueueConfig,
    QueueStats,
    RunState,
    StepKind,
    StepRecord,
    StepState,
    WorkerInfo,
    WorkflowRun,
)
from dispatch_core.models import SortOrder, ThroughputBucket
from dispatch_plugins.admin.codec import format_datetime, from_json, parse_datetime, to_json
from dispatch_plugins.admin.errors import ApiError
from dispatch_plugins.admin.pagination import (
    PageRequest,
    decode_cursor,
    encode_cursor,
    paginate,
    parse_page_request,
)

T0 = datetime(2026, 11, 28, 1, 2, 3, 456789, tzinfo=UTC)

MODELS: list[Any] = [
    Job(
        id="job_1",
        name="send",
        queue="q",
        payload={"to": ["a@b.c"], "n": 1.5},
        state=JobState.RUNNING,
        priority=2,
        attempt=1,
        max_attempts=4,
        timeout=None,
        run_at=T0,
        created_at=T0,
        updated_at=T0,
        started_at=T0,
        tenant="acme",
        headers={"h": "v"},
        result=[1, None],
        worker_id="wkr_1",
        lease_expires_at=T0 + timedelta(seconds=30),
    ),
    DLQEntry(
        id="dlq_1",
        job_id="job_1",
        name="send",
        queue="q",
        payload=None,
        error="Traceback...",
        attempts=4,
        max_attempts=4,
        priority=0,
        timeout=30.0,
        tenant=None,
        headers={},
        failed_at=T0,
    ),
    WorkflowRun(
        id="wfrun_1",
        name="order",
        version=2,
        input={"id": 1},
        state=RunState.WAITING,
        created_at=T0,
        updated_at=T0,
        waiting_for="approved",
        wake_at=T0,
        generation=3,
    ),
    StepRecord(seq=0, name="charge", kind=StepKind.STEP, state=StepState.COMPLETED, started_at=T0),
    CronEntry(
        name="nightly",
        expr="0 3 * * *",
        job_name="cleanup",
        next_run_at=T0,
        created_at=T0,
        updated_at=T0,
    ),
    QueueStats(
        name="q",
        config=QueueConfig(name="q", concurrency=2, rate=1.5),
        paused=True,
        depth=1,
        running=0,
        completed_last_minute=3,
    ),
    WorkerInfo(
        id="wkr_1",
        hostname="h",
        pid=7,
        queues=("a", "b"),
        concurrency=10,
        version="0.1.0",
        started_at=T0,
        last_seen=T0,
        leader=True,
    ),
    ThroughputBucket(start=T0.replace(microsecond=0, second=0), completed=3, failed=1),
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_every_model_goes_to_json_and_back(model: Any) -> None:
    data = to_json(model)
    assert isinstance(data, dict)
    assert _plain(data)
    assert from_json(data, type(model)) == model
    assert from_json([data], list[type(model)]) == [model]  # type: ignore[misc]


def _plain(value: Any) -> bool:
    """Only JSON types (no enums, tuples or datetimes)."""
    if isinstance(value, dict):
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


def test_job_json_hides_the_attempt_token_and_formats_times() -> None:
    import attrs

    job = attrs.evolve(MODELS[0], attempt_token="secret-fence")
    data = to_json(job)
    assert "attempt_token" not in data
    assert data["run_at"] == "2026-11-28T01:02:03.456789Z"
    assert data["state"] == "running"
    assert from_json(data, Job).attempt_token is None


def test_datetimes() -> None:
    assert format_datetime(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000000Z"
    plus2 = datetime(2026, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    assert format_datetime(plus2) == "2026-01-01T00:00:00.000000Z"
    assert format_datetime(datetime(2026, 1, 1)) == "2026-01-01T00:00:00.000000Z"
    assert parse_datetime("2026-01-01T02:00:00+02:00") == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_datetime("2026-11-28T01:02:03.456789Z") == T0
    with pytest.raises(ValueError, match="timezone"):
        parse_datetime("2026-01-01T00:00:00")


@pytest.mark.parametrize("key", ["job_01h", "a/b+c?", "ünïcode name", "x" * 200])
def test_cursors_round_trip_and_are_url_safe(key: str) -> None:
    cursor = encode_cursor(key)
    assert all(c.isalnum() or c in "-_" for c in cursor)
    assert decode_cursor(cursor) == key


@pytest.mark.parametrize(
    "cursor", ["", "!!!", "YQ==", "YQ=", "_w", "x" * 2000, encode_cursor("a\nb"), "gA"]
)
def test_malformed_cursors_are_400_invalid_cursor(cursor: str) -> None:
    with pytest.raises(ApiError) as caught:
        decode_cursor(cursor)
    assert (caught.value.status, caught.value.code) == (400, "invalid_cursor")


def test_page_requests() -> None:
    assert parse_page_request({}, default_order=SortOrder.ASC) == PageRequest(
        limit=50, after=None, order=SortOrder.ASC
    )
    parsed = parse_page_request(
        {"limit": "1000", "order": "desc", "cursor": encode_cursor("k")},
        default_order=SortOrder.ASC,
    )
    assert parsed == PageRequest(limit=1000, after="k", order=SortOrder.DESC)
    for bad in ({"limit": "1e3"}, {"limit": "٣"}, {"order": "ASC"}):
        with pytest.raises(ApiError):
            parse_page_request(bad, default_order=SortOrder.ASC)


def test_paginate_in_memory() -> None:
    names = ["c", "a", "d", "b"]
    first = paginate(names, PageRequest(limit=3, order=SortOrder.ASC), str)
    assert first.items == ["a", "b", "c"]
    assert first.next_cursor == encode_cursor("c")
    second = paginate(names, PageRequest(limit=3, after="c", order=SortOrder.ASC), str)
    assert second.items == ["d"]
    assert second.next_cursor is None
    desc = paginate(names, PageRequest(limit=2, after="c", order=SortOrder.DESC), str)
    assert desc.items == ["b", "a"]
    assert desc.next_cursor is None
    assert paginate([], PageRequest(), str).items == []
