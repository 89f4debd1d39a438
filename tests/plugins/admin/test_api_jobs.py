"""``/v1/jobs``: listing with filters and keyset pages, counts, enqueue (and its errors),
show, cancel and retry. The module runs on the memory store and on SQLite."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from dispatch_core import JobState
from dispatch_core.models import utcnow
from dispatch_plugins.admin.codec import from_json, to_json
from dispatch_plugins.admin.pagination import decode_cursor


@pytest.fixture(params=["memory", "sqlite"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every test of this module runs on the memory store and on SQLite."""
    return str(request.param)


async def enqueue(api: Any, status: int = 201, **body: Any) -> dict[str, Any]:
    return await api.ok("POST", "/jobs", status, json=body)  # type: ignore[no-any-return]


async def test_enqueue_returns_the_job_as_json(api: Any) -> None:
    job = await enqueue(api, name="send", payload=5, queue="mail", priority=3, max_retries=2)
    assert job["name"] == "send"
    assert job["payload"] == 5
    assert (job["queue"], job["priority"], job["max_attempts"]) == ("mail", 3, 3)
    assert job["state"] == "pending"
    assert job["tenant"] is None
    assert "attempt_token" not in job
    assert job["created_at"].endswith("Z")
    stored = await api.engine.aget_job(job["id"])
    assert to_json(stored) == job
    assert from_json(job, type(stored)) == stored


async def test_enqueue_options_delay_run_at_timeout(api: Any) -> None:
    before = utcnow()
    delayed = await enqueue(api, name="send", payload=1, delay=120, timeout=5)
    job = await api.engine.aget_job(delayed["id"])
    assert job.run_at >= before + timedelta(seconds=120)
    assert job.timeout == 5
    at = (utcnow() + timedelta(days=1)).replace(microsecond=0)
    scheduled = await enqueue(api, name="send", payload=1, run_at=at.isoformat())
    assert (await api.engine.aget_job(scheduled["id"])).run_at == at
    offset = await enqueue(api, name="send", payload=1, run_at="2030-01-01T02:00:00+02:00")
    assert offset["run_at"] == "2030-01-01T00:00:00.000000Z"


async def test_unique_key_and_job_id_return_the_existing_job_with_200(api: Any) -> None:
    first = await enqueue(api, name="send", payload=1, unique_key="k1")
    again = await enqueue(api, 200, name="send", payload=2, unique_key="k1")
    assert again["id"] == first["id"]
    chosen = await enqueue(api, name="send", payload=1, job_id="order-42")
    assert chosen["id"] == "order-42"
    assert (await enqueue(api, 200, name="send", payload=1, job_id="order-42"))["id"] == "order-42"


async def test_a_job_without_payload(api: Any) -> None:
    job = await enqueue(api, name="noop")
    assert job["payload"] is None


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({}, 400, "invalid_request", "name"),
        ({"name": ""}, 400, "invalid_request", "name"),
        ({"name": 5}, 400, "invalid_request", "name"),
        ({"name": "send", "payload": 1, "priority": "high"}, 400, "invalid_request", "priority"),
        ({"name": "send", "payload": 1, "priority": True}, 400, "invalid_request", "priority"),
        ({"name": "send", "payload": 1, "delay": -1}, 400, "invalid_request", "delay"),
        ({"name": "send", "payload": 1, "timeout": 0}, 400, "invalid_request", "timeout"),
        ({"name": "send", "payload": 1, "max_retries": -1}, 400, "invalid_request", "max_retries"),
        ({"name": "send", "payload": 1, "run_at": "tomorrow"}, 400, "invalid_request", "run_at"),
        (
            {"name": "send", "payload": 1, "run_at": "2030-01-01T00:00:00"},
            400,
            "invalid_request",
            "run_at",
        ),
        (
            {"name": "send", "payload": 1, "delay": 1, "run_at": "2030-01-01T00:00:00Z"},
            400,
            "invalid_request",
            "delay",
        ),
        ({"name": "send", "payload": 1, "job_id": "has space"}, 400, "invalid_request", "job_id"),
        (
            {"name": "send", "payload": 1, "job_id": "a", "unique_key": "b"},
            400,
            "invalid_request",
            "job_id",
        ),
        ({"name": "send", "payload": 1, "colour": "red"}, 400, "invalid_request", "colour"),
        ({"name": "send", "payload": 1, "queue": "a\nb"}, 400, "invalid_request", "queue"),
        ({"name": "send", "payload": 1, "queue": "q" * 201}, 400, "invalid_request", "queue"),
    ],
)
async def test_enqueue_validation_names_the_field(
    api: Any, body: dict[str, Any], status: int, code: str, field: str
) -> None:
    error = api.error(await api.post("/jobs", json=body), status, code)
    assert error["details"]["field"] == field
    assert field in error["message"]
    assert await api.engine.alist_jobs() == []


async def test_unknown_and_internal_job_names_are_422_unknown_job(api: Any) -> None:
    error = api.error(await api.post("/jobs", json={"name": "nope"}), 422, "unknown_job")
    assert "nope" in error["message"]
    driver = {"name": "dispatch.workflow", "payload": {"run_id": "wfrun_x"}}
    error = api.error(await api.post("/jobs", json=driver), 422, "unknown_job")
    assert "dispatch.workflow" not in error["message"].split("registered jobs:")[1]


async def test_bad_payload_is_422_with_the_path(api: Any) -> None:
    error = api.error(
        await api.post("/jobs", json={"name": "send", "payload": "five"}), 422, "invalid_payload"
    )
    assert error["details"]["path"] == "$"
    assert error["details"]["problems"]
    api.error(await api.post("/jobs", json={"name": "send"}), 422, "invalid_payload")
    api.error(
        await api.post("/jobs", json={"name": "noop", "payload": [1]}), 422, "invalid_payload"
    )
    nul = {"name": "noop", "payload": {"a": ["ok", "x\u0000y"]}}
    error = api.error(await api.post("/jobs", json=nul), 422, "invalid_payload")
    assert error["details"]["path"] == "$.a[1]"


@pytest.mark.parametrize(
    "content",
    [b"{", b"[1, 2]", b'"name"', b'{"name": "send", "payload": NaN}', b"[" * 100_000],
)
async def test_a_body_that_is_not_a_json_object_is_400(api: Any, content: bytes) -> None:
    api.error(await api.post("/jobs", content=content), 400, "invalid_request")


async def test_list_filters_and_orders(api: Any) -> None:
    a = await enqueue(api, name="send", payload=1, queue="q1")
    b = await enqueue(api, name="noop", queue="q2")
    c = await enqueue(api, name="send", payload=2, queue="q1", delay=60)
    page = await api.ok("GET", "/jobs")
    assert [j["id"] for j in page["items"]] == [c["id"], b["id"], a["id"]]
    assert page["next_cursor"] is None
    asc = await api.ok("GET", "/jobs", params={"order": "asc"})
    assert [j["id"] for j in asc["items"]] == [a["id"], b["id"], c["id"]]
    by_queue = await api.ok("GET", "/jobs", params={"queue": "q1"})
    assert {j["id"] for j in by_queue["items"]} == {a["id"], c["id"]}
    by_name = await api.ok("GET", "/jobs", params={"name": "noop"})
    assert [j["id"] for j in by_name["items"]] == [b["id"]]
    await api.engine.acancel(b["id"])
    cancelled = await api.ok("GET", "/jobs", params={"state": "cancelled"})
    assert [j["id"] for j in cancelled["items"]] == [b["id"]]


async def test_pages_follow_the_cursor_without_gaps_or_repeats(api: Any) -> None:
    ids = [(await enqueue(api, name="send", payload=i))["id"] for i in range(7)]
    for order, expected in (("desc", ids[::-1]), ("asc", ids)):
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 3, "order": order}
            if cursor:
                params["cursor"] = cursor
            page = await api.ok("GET", "/jobs", params=params)
            seen += [j["id"] for j in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert decode_cursor(cursor) == seen[-1]
        assert seen == expected
        assert pages == 3
    exact = await api.ok("GET", "/jobs", params={"limit": 7})
    assert exact["next_cursor"] is None
    assert len(exact["items"]) == 7


@pytest.mark.parametrize(
    ("params", "field", "code"),
    [
        ({"limit": "0"}, "limit", "invalid_request"),
        ({"limit": "1001"}, "limit", "invalid_request"),
        ({"limit": "ten"}, "limit", "invalid_request"),
        ({"limit": "-1"}, "limit", "invalid_request"),
        ({"order": "up"}, "order", "invalid_request"),
        ({"state": "sleeping"}, "state", "invalid_request"),
        ({"cursor": "!!"}, "cursor", "invalid_cursor"),
        ({"cursor": "YQ=="}, "cursor", "invalid_cursor"),
        ({"colour": "red"}, "colour", "invalid_request"),
        ({"queue": ""}, "queue", "invalid_request"),
    ],
)
async def test_bad_query_parameters_are_400_naming_them(
    api: Any, params: dict[str, str], field: str, code: str
) -> None:
    error = api.error(await api.get("/jobs", params=params), 400, code)
    assert error["details"]["field"] == field


async def test_a_repeated_query_parameter_is_400(api: Any) -> None:
    response = await api.client.get(
        "/dispatch/v1/jobs?queue=a&queue=b", headers={"Authorization": f"Bearer {api.OPS}"}
    )
    assert api.error(response, 400, "invalid_request")["details"]["field"] == "queue"


async def test_counts_have_every_state(api: Any) -> None:
    await enqueue(api, name="send", payload=1, queue="q1")
    await enqueue(api, name="send", payload=1, queue="q2")
    counts = await api.ok("GET", "/jobs/counts")
    assert counts == {s.value: (2 if s is JobState.PENDING else 0) for s in JobState}
    q1 = await api.ok("GET", "/jobs/counts", params={"queue": "q1"})
    assert q1["pending"] == 1


async def test_show_cancel_retry(api: Any) -> None:
    job = await enqueue(api, name="send", payload=1)
    assert (await api.ok("GET", f"/jobs/{job['id']}"))["id"] == job["id"]
    api.error(await api.post(f"/jobs/{job['id']}/retry"), 409, "invalid_state")
    cancelled = await api.ok("POST", f"/jobs/{job['id']}/cancel")
    assert cancelled["state"] == "cancelled"
    error = api.error(await api.post(f"/jobs/{job['id']}/cancel"), 409, "invalid_state")
    assert error["details"] == {"state": "cancelled"}
    retried = await api.ok("POST", f"/jobs/{job['id']}/retry")
    assert retried["state"] == "pending"


async def test_a_failed_job_can_be_retried(api: Any) -> None:
    job = await enqueue(api, name="boom")
    await api.engine.drain()
    assert (await api.ok("GET", f"/jobs/{job['id']}"))["state"] == "failed"
    assert (await api.ok("POST", f"/jobs/{job['id']}/retry"))["state"] == "pending"


@pytest.mark.parametrize("path", ["/jobs/job_nope", "/jobs/x%00y", "/jobs/" + "x" * 300])
async def test_unknown_job_is_404(api: Any, path: str) -> None:
    api.error(await api.get(path), 404, "not_found")
    api.error(await api.post("/jobs/job_nope/cancel"), 404, "not_found")
    api.error(await api.post("/jobs/job_nope/retry"), 404, "not_found")
