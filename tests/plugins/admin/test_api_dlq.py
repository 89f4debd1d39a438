"""``/v1/dlq``: list, count, show, replay one, replay many, purge."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from dispatch_core import Engine, JobState
from dispatch_core.models import utcnow
from dispatch_plugins.admin.codec import format_datetime


async def fail(engine: Engine, n: int, queue: str = "default") -> list[str]:
    """Dead-letter ``n`` jobs of ``queue``; return the entry ids, oldest first."""
    for _ in range(n):
        await engine.aenqueue("boom", queue=queue)
    await engine.drain()
    return [e.id for e in await engine.alist_dlq(queue=queue, limit=1000)]


async def test_list_count_show(api: Any) -> None:
    ids = await fail(api.engine, 3)
    other = await fail(api.engine, 1, queue="other")
    page = await api.ok("GET", "/dlq")
    assert [e["id"] for e in page["items"]] == ids + other
    assert page["items"][0]["error"].startswith("Traceback") or "boom" in page["items"][0]["error"]
    desc = await api.ok("GET", "/dlq", params={"order": "desc", "limit": 2})
    assert [e["id"] for e in desc["items"]] == (ids + other)[::-1][:2]
    rest = await api.ok("GET", "/dlq", params={"order": "desc", "cursor": desc["next_cursor"]})
    assert [e["id"] for e in rest["items"]] == (ids + other)[::-1][2:]
    assert rest["next_cursor"] is None
    assert (await api.ok("GET", "/dlq", params={"queue": "other"}))["items"][0]["id"] == other[0]
    assert (await api.ok("GET", "/dlq", params={"name": "send"}))["items"] == []
    assert await api.ok("GET", "/dlq/count") == {"count": 4}
    assert await api.ok("GET", "/dlq/count", params={"queue": "other"}) == {"count": 1}
    entry = await api.ok("GET", f"/dlq/{ids[0]}")
    assert entry["id"] == ids[0]
    assert entry["name"] == "boom"
    assert entry["replayed_at"] is None
    api.error(await api.get("/dlq/dlq_nope"), 404, "not_found")


async def test_list_and_count_by_replayed_and_failure_time(api: Any) -> None:
    await fail(api.engine, 2)
    ids = await fail(api.engine, 2)  # a second drain: these two failed after the first two
    await api.engine.areplay_dlq(ids[1])
    unreplayed = await api.ok("GET", "/dlq", params={"replayed": "false"})
    assert [e["id"] for e in unreplayed["items"]] == [ids[0], ids[2], ids[3]]
    page = await api.ok("GET", "/dlq", params={"replayed": "false", "limit": 2})
    rest = await api.ok("GET", "/dlq", params={"replayed": "false", "cursor": page["next_cursor"]})
    assert [e["id"] for e in page["items"] + rest["items"]] == [ids[0], ids[2], ids[3]]
    replayed = await api.ok("GET", "/dlq", params={"replayed": "true"})
    assert [e["id"] for e in replayed["items"]] == [ids[1]]
    assert await api.ok("GET", "/dlq/count", params={"replayed": "false"}) == {"count": 3}
    assert await api.ok("GET", "/dlq/count", params={"replayed": "true"}) == {"count": 1}
    third = await api.engine.aget_dlq(ids[2])
    before = {"before": format_datetime(third.failed_at)}
    assert await api.ok("GET", "/dlq/count", params=before) == {"count": 2}
    assert await api.ok("GET", "/dlq/count", params={**before, "replayed": "false"}) == {"count": 1}


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/dlq", {"replayed": "yes"}, "replayed"),
        ("/dlq/count", {"replayed": "1"}, "replayed"),
        ("/dlq/count", {"before": "yesterday"}, "before"),
        ("/dlq/count", {"before": "2030-01-01T00:00:00"}, "before"),
        ("/dlq", {"before": "2030-01-01T00:00:00Z"}, "before"),
    ],
)
async def test_dlq_filter_validation(
    api: Any, path: str, params: dict[str, str], field: str
) -> None:
    error = api.error(await api.get(path, params=params), 400, "invalid_request")
    assert error["details"]["field"] == field


async def test_replay_one_returns_the_new_job(api: Any) -> None:
    [entry_id] = await fail(api.engine, 1)
    job = await api.ok("POST", f"/dlq/{entry_id}/replay", 201)
    assert job["name"] == "boom"
    assert job["state"] == "pending"
    entry = await api.ok("GET", f"/dlq/{entry_id}")
    assert entry["replay_job_id"] == job["id"]
    api.error(await api.post("/dlq/dlq_nope/replay"), 404, "not_found")


async def test_bulk_replay_takes_the_oldest_unreplayed_and_reports_what_remains(api: Any) -> None:
    ids = await fail(api.engine, 5)
    by_hand = await api.engine.areplay_dlq(ids[0])  # already replayed: skipped
    first = await api.ok("POST", "/dlq/replay", json={"limit": 2})
    assert [r["entry_id"] for r in first["replayed"]] == ids[1:3]
    assert first["errors"] == []
    assert first["remaining"] == 2
    second = await api.ok("POST", "/dlq/replay", json={})
    assert [r["entry_id"] for r in second["replayed"]] == ids[3:]
    assert second["remaining"] == 0
    jobs = {r["job_id"] for r in first["replayed"] + second["replayed"]} | {by_hand.id}
    assert {j.id for j in await api.engine.alist_jobs(state=JobState.PENDING)} == jobs
    assert (await api.ok("POST", "/dlq/replay"))["replayed"] == []


async def test_bulk_replay_of_given_ids_reports_errors_per_entry(api: Any) -> None:
    ids = await fail(api.engine, 2)
    other = await fail(api.engine, 1, queue="other")
    result = await api.ok("POST", "/dlq/replay", json={"ids": [ids[1], "dlq_nope", ids[1]]})
    assert [r["entry_id"] for r in result["replayed"]] == [ids[1]]
    assert result["errors"] == [
        {
            "entry_id": "dlq_nope",
            "code": "not_found",
            "message": "dead-letter entry 'dlq_nope' not found",
        }
    ]
    assert result["remaining"] == 2  # ids[0] and the other queue's
    by_queue = await api.ok("POST", "/dlq/replay", json={"queue": "other"})
    assert [r["entry_id"] for r in by_queue["replayed"]] == other


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ids": []}, "ids"),
        ({"ids": "dlq_1"}, "ids"),
        ({"ids": [1]}, "ids[0]"),
        ({"ids": ["x"] * 1001}, "ids"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"everything": True}, "everything"),
    ],
)
async def test_bulk_replay_validation(api: Any, body: dict[str, Any], field: str) -> None:
    error = api.error(await api.post("/dlq/replay", json=body), 400, "invalid_request")
    assert error["details"]["field"] == field


async def test_purge_deletes_older_entries_in_batches(api: Any) -> None:
    ids = await fail(api.engine, 5)
    cutoff = format_datetime(utcnow() + timedelta(seconds=1))
    first = await api.ok("POST", "/dlq/purge", json={"before": cutoff, "limit": 2})
    assert first == {"purged": 2, "remaining": 3}
    assert [e.id for e in await api.engine.alist_dlq()] == ids[2:]
    rest = await api.ok("POST", "/dlq/purge", json={"before": cutoff})
    assert rest == {"purged": 3, "remaining": 0}
    past = format_datetime(utcnow() - timedelta(days=1))
    await fail(api.engine, 1)
    assert await api.ok("POST", "/dlq/purge", json={"before": past}) == {
        "purged": 0,
        "remaining": 0,
    }


async def test_purge_remaining_counts_only_entries_older_than_before(api: Any) -> None:
    old = await fail(api.engine, 3)
    cutoff = (await api.engine.aget_dlq(old[-1])).failed_at + timedelta(microseconds=1)
    await fail(api.engine, 2)  # failed after the cutoff: never purged, never counted
    body = {"before": format_datetime(cutoff), "limit": 1}
    assert await api.ok("POST", "/dlq/purge", json=body) == {"purged": 1, "remaining": 2}
    assert await api.ok("GET", "/dlq/count") == {"count": 4}


async def test_purge_by_queue(api: Any) -> None:
    await fail(api.engine, 2)
    other = await fail(api.engine, 1, queue="other")
    cutoff = format_datetime(utcnow() + timedelta(seconds=1))
    result = await api.ok("POST", "/dlq/purge", json={"before": cutoff, "queue": "default"})
    assert result == {"purged": 2, "remaining": 0}
    assert [e.id for e in await api.engine.alist_dlq()] == other


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "before"),
        ({"before": None}, "before"),
        ({"before": "yesterday"}, "before"),
        ({"before": "2030-01-01T00:00:00"}, "before"),
        ({"before": "2030-01-01T00:00:00Z", "limit": 10_001}, "limit"),
        ({"before": "2030-01-01T00:00:00Z", "older_than": 5}, "older_than"),
    ],
)
async def test_purge_validation(api: Any, body: dict[str, Any], field: str) -> None:
    error = api.error(await api.post("/dlq/purge", json=body), 400, "invalid_request")
    assert error["details"]["field"] == field
