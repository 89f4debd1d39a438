"""Listings carry previews, not whole bodies (issue 16, finding 7).

A page of 1,000 jobs of 10 MiB payloads and results was a 198 MiB response that took the server
from 220 MB to 1,157 MB. Here the attack is scaled down: 30 jobs, 30 dead letters and 30 runs
whose payloads, results, inputs and outputs are 1 MiB each, listed with ``limit=1000``. Each
page must stay small, carry previews and sizes, and the detail routes must still give the
whole bodies. The module runs on the memory store and on SQLite.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from dispatch_core import Engine, Workflow
from dispatch_core.models import Job, Truncated
from dispatch_plugins.admin.app import admin_app
from dispatch_plugins.admin.auth import Token
from dispatch_plugins.admin.client import AdminClient
from dispatch_plugins.admin.pagination import LIST_PREVIEW, MAX_PREVIEW

#: Items of each kind, and the size of each body (in characters and bytes: ASCII).
COUNT = 30
BIG = 1 << 20
TEXT = "x" * BIG
#: What a listing sends for a 1 MiB string body (its JSON text has two quotes more).
PREVIEW = '"' + "x" * (LIST_PREVIEW - 1)
SIZE = BIG + 2
#: A page of COUNT items with previews is a few hundred bytes per item; whole, it is 30 MiB
#: or more.
SMALL_PAGE = 64 * 1024


@pytest.fixture(params=["memory", "sqlite"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every test of this module runs on the memory store and on SQLite."""
    return str(request.param)


@pytest.fixture
async def engine(store_kind: str, tmp_path: pathlib.Path) -> AsyncIterator[Engine]:
    """The tests' engine, plus jobs and a workflow that pass big bodies through."""
    url = "memory://" if store_kind == "memory" else "sqlite:///" + str(tmp_path / "x.db")
    engine = Engine(url)

    @engine.job(name="echo")
    async def echo(text: str) -> str:
        return text

    @engine.job(name="reject", max_retries=0)
    async def reject(text: str) -> None:
        raise RuntimeError("rejected")

    @engine.workflow(name="mirror")
    async def mirror(wf: Workflow, text: str) -> str:
        return text

    yield engine
    await engine.aclose()
    engine.close()


@pytest.fixture
async def big(engine: Engine) -> dict[str, list[str]]:
    """COUNT jobs completed with 1 MiB payloads and results, and one small job; their ids."""
    jobs = [(await engine.aenqueue("echo", TEXT)).id for _ in range(COUNT)]
    small = (await engine.aenqueue("echo", "hi")).id
    await engine.drain()
    return {"jobs": jobs, "small": [small]}


@pytest.fixture
async def dead(engine: Engine) -> list[str]:
    """The ids of COUNT dead-letter entries with 1 MiB payloads."""
    for _ in range(COUNT):
        await engine.aenqueue("reject", TEXT)
    await engine.drain()
    entries = [e.id for e in await engine.alist_dlq(limit=1000, preview=0)]
    assert len(entries) == COUNT
    return entries


@pytest.fixture
async def runs(engine: Engine) -> list[str]:
    """The ids of COUNT runs completed with 1 MiB inputs and outputs."""
    ids = [(await engine.workflows["mirror"].astart(TEXT)).id for _ in range(COUNT)]
    await engine.drain()
    return ids


async def small_page(
    api: Any, path: str, bound: int = SMALL_PAGE, **params: Any
) -> list[dict[str, Any]]:
    """GET a listing of up to 1000 items; check that the whole answer is under ``bound``."""
    response = await api.get(path, params={"limit": 1000, **params})
    assert response.status_code == 200, response.text[:500]
    assert len(response.content) < bound, f"{path}: {len(response.content)} bytes"
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def assert_preview(item: dict[str, Any], field: str) -> None:
    """The item carries ``field`` as a preview of a 1 MiB string."""
    assert item[field] is None
    assert item[f"{field}_truncated"] is True
    assert item[f"{field}_preview"] == PREVIEW
    assert item[f"{field}_size"] == SIZE


async def test_a_page_of_jobs_carries_previews(api: Any, big: dict[str, list[str]]) -> None:
    items = {i["id"]: i for i in await small_page(api, "/jobs", name="echo")}
    assert set(items) == set(big["jobs"]) | set(big["small"])
    for job_id in big["jobs"]:
        assert items[job_id]["state"] == "completed"
        assert_preview(items[job_id], "payload")
        assert_preview(items[job_id], "result")
    # a small body is sent whole, without the preview fields
    (small,) = (items[i] for i in big["small"])
    assert (small["payload"], small["result"]) == ("hi", "hi")
    assert not any(key.endswith(("_truncated", "_preview", "_size")) for key in small)


async def test_the_job_route_gives_the_whole_bodies(api: Any, big: dict[str, list[str]]) -> None:
    job = await api.ok("GET", f"/jobs/{big['jobs'][0]}")
    assert job["payload"] == TEXT
    assert job["result"] == TEXT
    assert "payload_truncated" not in job


async def test_a_page_of_dead_letters_carries_previews(api: Any, dead: list[str]) -> None:
    items = await small_page(api, "/dlq")
    assert sorted(i["id"] for i in items) == sorted(dead)
    for item in items:
        assert_preview(item, "payload")
        assert item["error"]
    entry = await api.ok("GET", f"/dlq/{items[0]['id']}")
    assert entry["payload"] == TEXT


async def test_a_page_of_runs_carries_previews(api: Any, runs: list[str]) -> None:
    items = {i["id"]: i for i in await small_page(api, "/runs", name="mirror")}
    assert set(items) == set(runs)
    for item in items.values():
        assert item["state"] == "completed"
        assert_preview(item, "input")
        assert_preview(item, "output")
    run = await api.ok("GET", f"/runs/{runs[0]}")
    assert (run["input"], run["output"]) == (TEXT, TEXT)
    timeline = await api.ok("GET", f"/runs/{runs[0]}/timeline")
    assert timeline["run"]["output"] == TEXT


async def test_replaying_the_oldest_dead_letters_lists_them_without_payloads(
    api: Any, dead: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # POST /dlq/replay without ids lists the oldest entries itself: it needs their ids only
    asked: list[int | None] = []
    listing = api.engine.alist_dlq

    async def spy(**kw: Any) -> Any:
        asked.append(kw.get("preview"))
        return await listing(**kw)

    monkeypatch.setattr(api.engine, "alist_dlq", spy)
    result = await api.ok("POST", "/dlq/replay", json={"limit": 1000})
    assert len(result["replayed"]) == COUNT
    assert asked == [0]
    job = await api.ok("GET", f"/jobs/{result['replayed'][0]['job_id']}")
    assert job["payload"] == TEXT  # the replayed job has the whole payload


@pytest.mark.parametrize("preview", [0, 3, MAX_PREVIEW])
async def test_the_preview_parameter_sets_the_length(
    api: Any, big: dict[str, list[str]], preview: int
) -> None:
    # two previews per job at most, and some room for the rest of each item
    bound = (COUNT + 1) * (2 * preview + 1024)
    page = await small_page(api, "/jobs", bound, name="echo", preview=preview)
    items = {i["id"]: i for i in page}
    for job_id in big["jobs"]:
        assert items[job_id]["payload_preview"] == ('"' + TEXT)[:preview]
        assert items[job_id]["result_size"] == SIZE
    small = items[big["small"][0]]  # its JSON text, '"hi"', is 4 bytes
    if preview >= 4:
        assert small["payload"] == "hi"
    else:
        assert small["payload_preview"] == '"hi"'[:preview]
        assert small["payload_size"] == 4


@pytest.mark.parametrize("value", ["-1", str(MAX_PREVIEW + 1), "abc", "1e3", "9" * 5000, ""])
@pytest.mark.parametrize("path", ["/jobs", "/dlq", "/runs"])
async def test_a_bad_preview_is_a_400_naming_it(api: Any, path: str, value: str) -> None:
    error = api.error(await api.get(path, params={"preview": value}), 400, "invalid_request")
    assert error["details"]["field"] == "preview"
    assert "preview" in error["message"]


async def test_the_client_decodes_previews(
    engine: Engine, big: dict[str, list[str]], dead: list[str], runs: list[str]
) -> None:
    secret = "ops-secret-for-previews"
    token = Token(name="ops", secret=secret, scopes=frozenset({"admin"}))
    app = Starlette(routes=[Mount("/dispatch", app=admin_app(engine, tokens=[token]))])
    transport = httpx.ASGITransport(app=app)
    async with AdminClient("http://testserver/dispatch", secret, transport=transport) as client:
        jobs = await client.alist_jobs(name="echo", limit=1000)
        by_id = {j.id: j for j in jobs}
        cut = Truncated(preview=PREVIEW, size=SIZE)
        assert all(by_id[i].payload == cut and by_id[i].result == cut for i in big["jobs"])
        assert by_id[big["small"][0]].payload == "hi"
        # a longer preview when asked (capped at the server's largest)
        (one,) = await client.alist_jobs(
            name="echo", limit=1, order="asc", preview=10 * MAX_PREVIEW
        )
        assert one.payload == Truncated(preview=('"' + TEXT)[:MAX_PREVIEW], size=SIZE)
        entries = await client.alist_dlq(limit=1000)
        assert {e.id: e.payload for e in entries} == dict.fromkeys(dead, cut)
        listed = await client.alist_runs(name="mirror", limit=1000)
        assert {r.id: (r.input, r.output) for r in listed} == dict.fromkeys(runs, (cut, cut))
        # the detail reads are whole
        whole = await client.aget_job(big["jobs"][0])
        assert isinstance(whole, Job)
        assert (whole.payload, whole.result) == (TEXT, TEXT)
        assert (await client.aget_run(runs[0])).output == TEXT
        assert (await client.aget_dlq(dead[0])).payload == TEXT


async def test_pages_with_previews_match_the_openapi_document(
    api: Any, big: dict[str, list[str]], dead: list[str], runs: list[str]
) -> None:
    import jsonschema_rs

    from dispatch_plugins.admin.openapi import openapi_document

    document = openapi_document()

    def validator(path: str) -> Any:
        operation = document["paths"]["/v1" + path]["get"]
        assert "preview" in {p["name"] for p in operation["parameters"]}
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        return jsonschema_rs.Draft202012Validator(
            {**schema, "components": document["components"]}, validate_formats=True
        )

    for path in ("/jobs", "/dlq", "/runs"):
        body = (await api.get(path, params={"limit": 1000})).json()
        check = validator(path)
        assert [e.message for e in check.iter_errors(body)] == []
        # the schema holds the fields together: a preview with a body is not a valid item
        field = "input" if path == "/runs" else "payload"
        item = next(i for i in body["items"] if f"{field}_truncated" in i)
        assert not check.is_valid({"items": [{**item, field: 1}], "next_cursor": None})
        del item[f"{field}_size"]
        assert not check.is_valid({"items": [item], "next_cursor": None})
