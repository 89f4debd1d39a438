"""``/v1/workflows``, ``/v1/runs`` and ``/v1/events`` on real runs driven by a worker."""

from __future__ import annotations

import json
from typing import Any

import pytest


@pytest.fixture(params=["memory", "sqlite"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every test of this module runs on the memory store and on SQLite."""
    return str(request.param)


async def test_registered_workflows_by_name_in_pages(api: Any) -> None:
    page = await api.ok("GET", "/workflows")
    assert page == {
        "items": [
            {"name": "approval", "version": 1, "queue": "default"},
            {"name": "order", "version": 1, "queue": "default"},
        ],
        "next_cursor": None,
    }
    first = await api.ok("GET", "/workflows", params={"limit": 1})
    second = await api.ok("GET", "/workflows", params={"limit": 1, "cursor": first["next_cursor"]})
    assert [w["name"] for w in first["items"] + second["items"]] == ["approval", "order"]
    assert second["next_cursor"] is None
    desc = await api.ok("GET", "/workflows", params={"order": "desc"})
    assert [w["name"] for w in desc["items"]] == ["order", "approval"]


async def test_start_a_run_and_follow_it_to_its_timeline(api: Any) -> None:
    run = await api.ok("POST", "/workflows/order/runs", 201, json={"input": 21})
    assert (run["name"], run["input"], run["state"], run["tenant"]) == (
        "order",
        21,
        "running",
        None,
    )
    await api.engine.drain()
    done = await api.ok("GET", f"/runs/{run['id']}")
    assert done["state"] == "completed"
    assert done["output"] == {"charged": 42}
    timeline = await api.ok("GET", f"/runs/{run['id']}/timeline")
    assert timeline["run"] == done
    [step] = timeline["steps"]
    assert (step["name"], step["kind"], step["state"], step["output"]) == (
        "charge",
        "step",
        "completed",
        42,
    )


async def test_start_errors(api: Any) -> None:
    api.error(await api.post("/workflows/nope/runs", json={}), 404, "not_found")
    bad = await api.post("/workflows/order/runs", json={"input": "lots"})
    assert api.error(bad, 422, "invalid_payload")["details"]["path"] == "$"
    api.error(await api.post("/workflows/order/runs"), 422, "invalid_payload")  # input missing
    no_input = await api.post("/workflows/approval/runs", json={"input": 1})
    api.error(no_input, 422, "invalid_payload")
    api.error(
        await api.post("/workflows/order/runs", json={"input": 1, "version": 2}),
        400,
        "invalid_request",
    )
    assert await api.engine.alist_runs() == []


async def test_list_runs_with_filters_and_pages(api: Any) -> None:
    a = await api.ok("POST", "/workflows/order/runs", 201, json={"input": 1})
    b = await api.ok("POST", "/workflows/approval/runs", 201, json={"correlation_key": "k"})
    await api.engine.drain()
    page = await api.ok("GET", "/runs")
    assert [r["id"] for r in page["items"]] == [b["id"], a["id"]]
    assert [
        r["id"] for r in (await api.ok("GET", "/runs", params={"state": "waiting"}))["items"]
    ] == [b["id"]]
    by_name = await api.ok("GET", "/runs", params={"name": "order", "order": "asc"})
    assert [r["id"] for r in by_name["items"]] == [a["id"]]
    one = await api.ok("GET", "/runs", params={"limit": 1})
    two = await api.ok("GET", "/runs", params={"limit": 1, "cursor": one["next_cursor"]})
    assert [r["id"] for r in one["items"] + two["items"]] == [b["id"], a["id"]]
    error = api.error(await api.get("/runs", params={"state": "pending"}), 400, "invalid_request")
    assert error["details"]["field"] == "state"
    api.error(await api.get("/runs/wfrun_nope"), 404, "not_found")
    api.error(await api.get("/runs/wfrun_nope/timeline"), 404, "not_found")


async def test_cancel_and_replay(api: Any) -> None:
    waiting = await api.ok("POST", "/workflows/approval/runs", 201)
    finished = await api.ok("POST", "/workflows/order/runs", 201, json={"input": 2})
    await api.engine.drain()
    replay = await api.post(f"/runs/{waiting['id']}/replay", json={"from_step": "charge"})
    assert api.error(replay, 409, "invalid_state")["details"] == {"state": "waiting"}
    cancelled = await api.ok("POST", f"/runs/{waiting['id']}/cancel")
    assert cancelled["state"] == "cancelled"
    api.error(await api.post(f"/runs/{waiting['id']}/cancel"), 409, "invalid_state")
    api.error(await api.post("/runs/wfrun_nope/cancel"), 404, "not_found")
    fork = await api.ok("POST", f"/runs/{finished['id']}/replay", 201, json={"from_step": "charge"})
    assert fork["id"] != finished["id"]
    assert fork["name"] == "order"
    await api.engine.drain()
    assert (await api.ok("GET", f"/runs/{fork['id']}"))["output"] == {"charged": 4}
    missing = await api.post(f"/runs/{finished['id']}/replay", json={"from_step": "ship"})
    assert api.error(missing, 400, "invalid_request")["details"]["field"] == "from_step"
    api.error(await api.post(f"/runs/{finished['id']}/replay", json={}), 400, "invalid_request")


async def test_events_by_run_id_and_by_correlation_key(api: Any) -> None:
    one = await api.ok("POST", "/workflows/approval/runs", 201, json={"correlation_key": "o-1"})
    two = await api.ok("POST", "/workflows/approval/runs", 201, json={"correlation_key": "o-1"})
    await api.engine.drain()
    sent = await api.ok(
        "POST", "/events", 202, json={"name": "approved", "run_id": one["id"], "payload": "yes"}
    )
    assert sent == {"run_ids": [one["id"]]}
    await api.engine.drain()
    assert (await api.ok("GET", f"/runs/{one['id']}"))["output"] == "yes"
    by_key = await api.ok(
        "POST", "/events", 202, json={"name": "approved", "correlation_key": "o-1", "payload": 7}
    )
    assert by_key == {"run_ids": [two["id"]]}  # the finished run is not reached
    await api.engine.drain()
    assert (await api.ok("GET", f"/runs/{two['id']}"))["output"] == 7
    nobody = await api.ok("POST", "/events", 202, json={"name": "approved", "correlation_key": "x"})
    assert nobody == {"run_ids": []}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "approved"}, 400, "invalid_request"),
        ({"name": "approved", "run_id": "a", "correlation_key": "b"}, 400, "invalid_request"),
        ({"run_id": "wfrun_x"}, 400, "invalid_request"),
        ({"name": "approved", "run_id": "wfrun_nope"}, 404, "not_found"),
        ({"name": "approved", "run_id": "r", "payload": "\ud800"}, 422, "invalid_payload"),
    ],
)
async def test_event_errors(api: Any, body: dict[str, Any], status: int, code: str) -> None:
    # json.dumps escapes the lone surrogate as \ud800, as a client in another language might.
    api.error(await api.post("/events", content=json.dumps(body).encode()), status, code)
