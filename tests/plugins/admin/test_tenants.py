"""Tenant isolation, route by route: a token of tenant A never sees, counts, cancels, retries,
replays, purges, signals or starts anything of tenant B.

Each test works on real objects of two tenants (jobs, a dead-lettered job, a finished run, a
run waiting for an event; see ``populate`` in conftest.py), calls a route with A's token, and
checks both what A gets and that B's objects are as they were. The last test checks that every
route of the API is covered here, or is an operator route (tenant tokens are refused there), or
touches no tenant's data.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import attrs
import pytest

from dispatch_core import Engine, JobState, RunState, tenant_scope
from dispatch_core.models import utcnow
from dispatch_plugins.admin.codec import format_datetime, to_json
from dispatch_plugins.admin.routes import ENDPOINTS


@pytest.fixture(params=["memory", "sqlite"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every test of this module runs on the memory store and on SQLite."""
    return str(request.param)


@attrs.frozen
class ByIdCase:
    """A route on one object: ``field`` names which of the tenant's objects it takes."""

    method: str
    path: str  # with {id}
    field: str
    body: dict[str, Any] | None
    ok_status: int

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


BY_ID = [
    ByIdCase("GET", "/jobs/{id}", "pending_job", None, 200),
    ByIdCase("POST", "/jobs/{id}/cancel", "pending_job", None, 200),
    ByIdCase("POST", "/jobs/{id}/retry", "failed_job", None, 200),
    ByIdCase("GET", "/dlq/{id}", "dlq_entry", None, 200),
    ByIdCase("POST", "/dlq/{id}/replay", "dlq_entry", None, 201),
    ByIdCase("GET", "/runs/{id}", "run", None, 200),
    ByIdCase("GET", "/runs/{id}/timeline", "run", None, 200),
    ByIdCase("POST", "/runs/{id}/cancel", "waiting_run", None, 200),
    ByIdCase("POST", "/runs/{id}/replay", "run", {"from_step": "charge"}, 201),
]


async def snapshot(engine: Engine, tenant: str) -> dict[str, Any]:
    """Everything of ``tenant`` a route could change, to compare before and after."""
    return {
        "jobs": sorted(await engine.alist_jobs(tenant=tenant, limit=1000), key=lambda j: j.id),
        "dlq": await engine.alist_dlq(tenant=tenant, limit=1000),
        "runs": sorted(await engine.alist_runs(tenant=tenant, limit=1000), key=lambda r: r.id),
        "steps": {
            r.id: await engine.atimeline(r.id)
            for r in await engine.alist_runs(tenant=tenant, limit=1000)
        },
    }


@pytest.mark.parametrize("case", BY_ID, ids=str)
async def test_another_tenants_object_is_404_and_left_alone(
    api: Any, world: Any, case: ByIdCase
) -> None:
    before = await snapshot(api.engine, "B")
    theirs = getattr(world["B"], case.field)
    response = await api.request(
        case.method, case.path.format(id=theirs), token=api.A, json=case.body
    )
    error = api.error(response, 404, "not_found")
    assert theirs in error["message"]  # the very message an unknown id gets
    assert await snapshot(api.engine, "B") == before
    # The same call on A's own object works, and the operator may act on B's.
    mine = getattr(world["A"], case.field)
    own = await api.request(case.method, case.path.format(id=mine), token=api.A, json=case.body)
    assert own.status_code == case.ok_status, own.text
    ops = await api.request(case.method, case.path.format(id=theirs), token=api.OPS, json=case.body)
    assert ops.status_code == case.ok_status, ops.text


@pytest.mark.parametrize("case", BY_ID, ids=str)
async def test_an_unknown_id_gets_the_same_answer(api: Any, world: Any, case: ByIdCase) -> None:
    theirs = getattr(world["B"], case.field)
    unknown = theirs[:-4] + "zzzz"
    foreign = await api.request(
        case.method, case.path.format(id=theirs), token=api.A, json=case.body
    )
    missing = await api.request(
        case.method, case.path.format(id=unknown), token=api.A, json=case.body
    )
    assert missing.status_code == foreign.status_code == 404
    assert missing.json()["error"]["message"].replace(unknown, "ID") == foreign.json()["error"][
        "message"
    ].replace(theirs, "ID")


@attrs.frozen
class ListCase:
    """A listing or count: what the API says for a tenant, and the truth from the engine."""

    path: str
    extract: Callable[[Any], Any]
    truth: Callable[[Engine, str | None], Awaitable[Any]]

    def __str__(self) -> str:
        return self.path


async def _job_ids(engine: Engine, tenant: str | None) -> set[str]:
    return {j.id for j in await engine.alist_jobs(tenant=tenant, limit=1000)}


async def _dlq_ids(engine: Engine, tenant: str | None) -> set[str]:
    return {e.id for e in await engine.alist_dlq(tenant=tenant, limit=1000)}


async def _run_ids(engine: Engine, tenant: str | None) -> set[str]:
    return {r.id for r in await engine.alist_runs(tenant=tenant, limit=1000)}


async def _job_counts(engine: Engine, tenant: str | None) -> dict[str, int]:
    return {s.value: n for s, n in (await engine.acount_jobs(tenant=tenant)).items()}


async def _dlq_count(engine: Engine, tenant: str | None) -> int:
    return await engine.acount_dlq(tenant=tenant)


async def _unhandled(engine: Engine, tenant: str | None) -> list[Any]:
    return to_json(await engine.aunhandled_jobs(tenant=tenant))  # type: ignore[no-any-return]


async def _stats(engine: Engine, tenant: str | None) -> tuple[Any, ...]:
    return (
        await _job_counts(engine, tenant),
        await _dlq_count(engine, tenant),
        await _unhandled(engine, tenant),
    )


def _ids(body: Any) -> set[str]:
    return {item["id"] for item in body["items"]}


LISTS = [
    ListCase("/jobs", _ids, _job_ids),
    ListCase("/jobs/counts", lambda body: body, _job_counts),
    ListCase("/jobs/unhandled", lambda body: body["items"], _unhandled),
    ListCase("/dlq", _ids, _dlq_ids),
    ListCase("/dlq/count", lambda body: body["count"], _dlq_count),
    ListCase("/runs", _ids, _run_ids),
    ListCase("/stats", lambda body: (body["jobs"], body["dlq"], body["unhandled"]), _stats),
]


@pytest.mark.parametrize("case", LISTS, ids=str)
async def test_lists_and_counts_hold_only_the_tenants_objects(
    api: Any, world: Any, case: ListCase
) -> None:
    engine = api.engine
    with tenant_scope("B"):  # B has more of everything, so that no count matches by chance
        await engine.aenqueue("boom")
        await engine.workflows["order"].astart(1)
    await engine.drain()
    with tenant_scope("B"):  # runnable, and no worker runs: it waits (/jobs/unhandled)
        await engine.aenqueue("send", 2)
    for tenant in ("A", "B"):
        body = await api.ok("GET", case.path, token=api.SECRETS[tenant])
        assert case.extract(body) == await case.truth(engine, tenant)
    # The two tenants' answers differ, and the operator sees both (or one, when it asks).
    assert case.extract(await api.ok("GET", case.path, token=api.A)) != case.extract(
        await api.ok("GET", case.path, token=api.B)
    )
    assert case.extract(await api.ok("GET", case.path)) == await case.truth(engine, None)
    only_b = await api.ok("GET", case.path, params={"tenant": "B"})
    assert case.extract(only_b) == await case.truth(engine, "B")
    # A tenant token cannot ask for another tenant (and may name its own).
    api.error(await api.get(case.path, token=api.A, params={"tenant": "B"}), 403, "operator_only")
    own = await api.ok("GET", case.path, token=api.A, params={"tenant": "A"})
    assert case.extract(own) == await case.truth(engine, "A")


async def test_list_filters_cannot_reach_across_tenants(api: Any, world: Any) -> None:
    # Filtering by B's job name or state still yields A's objects only.
    for params in ({"name": "send"}, {"state": "failed"}, {"order": "asc", "limit": 1}):
        page = await api.ok("GET", "/jobs", token=api.A, params=params)
        assert _ids(page) <= await _job_ids(api.engine, "A")
    one = await api.ok("GET", "/runs", token=api.A, params={"limit": 1})
    rest = await api.ok("GET", "/runs", token=api.A, params={"cursor": one["next_cursor"]})
    assert _ids(one) | _ids(rest) == await _run_ids(api.engine, "A")


async def test_bulk_replay_replays_only_the_tenants_entries(api: Any, world: Any) -> None:
    before = await snapshot(api.engine, "B")
    result = await api.ok("POST", "/dlq/replay", token=api.A, json={})
    assert [r["entry_id"] for r in result["replayed"]] == [world["A"].dlq_entry]
    assert result["remaining"] == 0  # B's entry is not A's to count
    assert await snapshot(api.engine, "B") == before
    by_id = await api.ok("POST", "/dlq/replay", token=api.A, json={"ids": [world["B"].dlq_entry]})
    assert by_id["replayed"] == []
    assert by_id["errors"][0]["code"] == "not_found"
    assert await snapshot(api.engine, "B") == before
    # An operator may replay B's entry, naming B or not.
    ops = await api.ok("POST", "/dlq/replay", json={"tenant": "B"})
    assert [r["entry_id"] for r in ops["replayed"]] == [world["B"].dlq_entry]
    api.error(
        await api.post("/dlq/replay", token=api.A, json={"tenant": "B"}), 403, "operator_only"
    )


async def test_purge_deletes_only_the_tenants_entries(api: Any, world: Any) -> None:
    before = await snapshot(api.engine, "B")
    cutoff = format_datetime(utcnow() + timedelta(minutes=1))
    result = await api.ok("POST", "/dlq/purge", token=api.A, json={"before": cutoff})
    assert result == {"purged": 1, "remaining": 0}
    assert await api.engine.alist_dlq(tenant="A") == []
    assert await snapshot(api.engine, "B") == before
    api.error(
        await api.post("/dlq/purge", token=api.A, json={"before": cutoff, "tenant": "B"}),
        403,
        "operator_only",
    )


async def test_events_reach_only_the_tenants_runs(api: Any, world: Any) -> None:
    before = await snapshot(api.engine, "B")
    # Both tenants have a run waiting under the correlation key "shared".
    sent = await api.ok(
        "POST", "/events", 202, token=api.A, json={"name": "approved", "correlation_key": "shared"}
    )
    assert sent == {"run_ids": [world["A"].waiting_run]}
    by_id = await api.post(
        "/events", token=api.A, json={"name": "approved", "run_id": world["B"].waiting_run}
    )
    api.error(by_id, 404, "not_found")
    api.error(
        await api.post(
            "/events",
            token=api.A,
            json={"name": "approved", "correlation_key": "shared", "tenant": "B"},
        ),
        403,
        "operator_only",
    )
    await api.engine.drain()
    assert (await api.engine.aget_run(world["A"].waiting_run)).state is RunState.COMPLETED
    assert (await api.engine.aget_run(world["B"].waiting_run)).state is RunState.WAITING
    assert await snapshot(api.engine, "B") == before
    # The operator reaches B's run by id, in B's tenant.
    ops = await api.ok(
        "POST", "/events", 202, json={"name": "approved", "run_id": world["B"].waiting_run}
    )
    assert ops == {"run_ids": [world["B"].waiting_run]}
    await api.engine.drain()
    assert (await api.engine.aget_run(world["B"].waiting_run)).state is RunState.COMPLETED


async def test_an_operator_signals_one_tenants_runs_by_correlation_key(
    api: Any, world: Any
) -> None:
    sent = await api.ok(
        "POST",
        "/events",
        202,
        json={"name": "approved", "correlation_key": "shared", "tenant": "B"},
    )
    assert sent == {"run_ids": [world["B"].waiting_run]}
    # Naming a tenant other than the run's reaches nothing.
    other = await api.post(
        "/events", json={"name": "approved", "run_id": world["A"].waiting_run, "tenant": "B"}
    )
    api.error(other, 404, "not_found")


async def test_enqueue_and_start_happen_in_the_tokens_tenant(api: Any, world: Any) -> None:
    job = await api.ok("POST", "/jobs", 201, token=api.A, json={"name": "send", "payload": 1})
    assert job["tenant"] == "A"
    assert (await api.engine.aget_job(job["id"])).tenant == "A"
    run = await api.ok("POST", "/workflows/order/runs", 201, token=api.A, json={"input": 1})
    assert run["tenant"] == "A"
    await api.engine.drain()
    # What the run's steps enqueue inherits the tenant too: every job it made is A's.
    assert {
        j.tenant for j in await api.engine.alist_jobs(limit=1000) if run["id"] in str(j.payload)
    } == {"A"}
    for path, body in (
        ("/jobs", {"name": "send", "payload": 1, "tenant": "B"}),
        ("/workflows/order/runs", {"input": 1, "tenant": "B"}),
    ):
        api.error(await api.post(path, token=api.A, json=body), 403, "operator_only")
    # Same tenant named explicitly is fine; the operator may pick any tenant, or none.
    assert (await api.ok("POST", "/jobs", 201, token=api.A, json={"name": "noop", "tenant": "A"}))[
        "tenant"
    ] == "A"
    assert (await api.ok("POST", "/jobs", 201, json={"name": "noop", "tenant": "B"}))[
        "tenant"
    ] == "B"
    assert (await api.ok("POST", "/jobs", 201, json={"name": "noop"}))["tenant"] is None


async def test_a_key_of_another_tenant_does_not_leak_its_job(api: Any, world: Any) -> None:
    # Unique keys are scoped by tenant: A gets a job of its own for a key B holds.
    theirs = await api.ok(
        "POST", "/jobs", 201, token=api.B, json={"name": "send", "payload": 1, "unique_key": "k-1"}
    )
    before_b = await snapshot(api.engine, "B")
    mine = await api.ok(
        "POST", "/jobs", 201, token=api.A, json={"name": "send", "payload": 2, "unique_key": "k-1"}
    )
    assert mine["id"] != theirs["id"]
    assert (mine["tenant"], mine["unique_key"], mine["payload"]) == ("A", "k-1", 2)
    assert await snapshot(api.engine, "B") == before_b
    # Each tenant's key now names its own job.
    again = await api.ok(
        "POST", "/jobs", 200, token=api.A, json={"name": "send", "payload": 3, "unique_key": "k-1"}
    )
    assert again["id"] == mine["id"]
    again = await api.ok(
        "POST", "/jobs", 200, token=api.B, json={"name": "send", "payload": 3, "unique_key": "k-1"}
    )
    assert again["id"] == theirs["id"]
    # The operator enqueues without a tenant: a third scope, a third job; or in B's, B's job.
    untenanted = await api.ok(
        "POST", "/jobs", 201, json={"name": "send", "payload": 3, "unique_key": "k-1"}
    )
    assert untenanted["tenant"] is None
    assert untenanted["id"] not in {mine["id"], theirs["id"]}
    in_b = await api.ok(
        "POST",
        "/jobs",
        200,
        json={"name": "send", "payload": 3, "unique_key": "k-1", "tenant": "B"},
    )
    assert in_b["id"] == theirs["id"]


async def test_a_job_id_of_another_tenant_is_a_conflict(api: Any, world: Any) -> None:
    # Ids are global, unlike keys: B's id cannot be A's job too, and A learns nothing of B's.
    # Only operator tokens choose ids (tests/plugins/admin/test_security_lows.py).
    theirs = await api.ok(
        "POST", "/jobs", 201, json={"name": "send", "payload": 1, "job_id": "k-1", "tenant": "B"}
    )
    before = await snapshot(api.engine, "A")
    mine = await api.post(
        "/jobs", token=api.A, json={"name": "send", "payload": 2, "job_id": "k-1"}
    )
    error = api.error(mine, 403, "option_not_allowed")
    assert error["details"]["field"] == "job_id"
    assert '"payload"' not in mine.text
    assert "created_at" not in mine.text
    assert await snapshot(api.engine, "A") == before
    # The operator without a tenant is refused too; in B's tenant it gets B's job back.
    api.error(
        await api.post("/jobs", json={"name": "send", "payload": 3, "job_id": "k-1"}),
        409,
        "conflict",
    )
    again = await api.ok(
        "POST", "/jobs", 200, json={"name": "send", "payload": 3, "job_id": "k-1", "tenant": "B"}
    )
    assert again["id"] == theirs["id"]


async def test_a_job_of_another_tenant_is_never_shown(
    api: Any, world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Defence in depth: should an enqueue ever return another tenant's job, the API hides it.
    theirs = await api.engine.aget_job(world["B"].pending_job)

    async def leaky(*args: Any, **kwargs: Any) -> Any:
        return theirs

    monkeypatch.setattr(api.engine, "aenqueue", leaky)
    response = await api.post(
        "/jobs", token=api.A, json={"name": "send", "payload": 1, "unique_key": "k"}
    )
    error = api.error(response, 409, "conflict")
    assert error["details"] == {"field": "unique_key"}
    assert theirs.id not in response.text


async def test_a_failed_tenant_job_retried_by_another_tenant_stays_failed(
    api: Any, world: Any
) -> None:
    api.error(await api.post(f"/jobs/{world['B'].failed_job}/retry", token=api.A), 404, "not_found")
    assert (await api.engine.aget_job(world["B"].failed_job)).state is JobState.FAILED


#: Routes a tenant token uses that touch no tenant's data, or are public.
NO_TENANT_DATA = {
    ("GET", "/workflows"),
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/openapi.json"),
}


def test_every_route_is_covered() -> None:
    covered = {(c.method, c.path.replace("{id}", "")) for c in BY_ID}
    covered |= {("GET", c.path) for c in LISTS}
    covered |= {("POST", "/dlq/replay"), ("POST", "/dlq/purge"), ("POST", "/events")}
    covered |= {("POST", "/jobs"), ("POST", "/workflows/{name}/runs")}
    for endpoint in ENDPOINTS:
        key = (endpoint.method, _strip_params(endpoint.path))
        if endpoint.operator_only or (endpoint.method, endpoint.path) in NO_TENANT_DATA:
            continue
        assert key in covered or (endpoint.method, endpoint.path) in covered, key


def _strip_params(path: str) -> str:
    import re

    return re.sub(r"\{[^}]+\}", "", path)
