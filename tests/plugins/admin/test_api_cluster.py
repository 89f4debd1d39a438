"""Operator routes: ``/v1/queues``, ``/v1/workers``, ``/v1/cron``."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest

from dispatch_core import Engine


@pytest.fixture(params=["memory", "sqlite"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every test of this module runs on the memory store and on SQLite."""
    return str(request.param)


async def test_queues_by_name_pause_and_resume(api: Any) -> None:
    for queue in ("mail", "billing", "mail"):
        await api.engine.aenqueue("send", 1, queue=queue)
    page = await api.ok("GET", "/queues")
    assert [(q["name"], q["depth"], q["paused"]) for q in page["items"]] == [
        ("billing", 1, False),
        ("mail", 2, False),
    ]
    assert page["next_cursor"] is None
    first = await api.ok("GET", "/queues", params={"limit": 1})
    assert first["items"][0]["name"] == "billing"
    rest = await api.ok("GET", "/queues", params={"limit": 1, "cursor": first["next_cursor"]})
    assert rest["items"][0]["name"] == "mail"
    assert rest["next_cursor"] is None
    paused = await api.ok("POST", "/queues/mail/pause")
    assert (paused["name"], paused["paused"], paused["depth"]) == ("mail", True, 2)
    assert (await api.engine.aqueues())[1].paused
    resumed = await api.ok("POST", "/queues/mail/resume")
    assert resumed["paused"] is False
    fresh = await api.ok("POST", "/queues/new-queue/pause")
    assert (fresh["name"], fresh["paused"]) == ("new-queue", True)


async def test_workers_and_leader(api: Any) -> None:
    page = await api.ok("GET", "/workers")
    assert page == {"items": [], "next_cursor": None, "leader": None}
    workers = [api.engine.worker(concurrency=1) for _ in range(2)]
    tasks = [asyncio.ensure_future(w.run(install_signal_handlers=False)) for w in workers]
    try:

        async def ready() -> bool:
            return len(await api.engine.aworkers()) == 2 and await api.engine.aleader() is not None

        await api.wait_until(ready)
        page = await api.ok("GET", "/workers")
        assert [w["id"] for w in page["items"]] == sorted(w.id for w in workers)
        assert {w["state"] for w in page["items"]} == {"running"}
        assert page["leader"] in {w.id for w in workers}
        assert [w["leader"] for w in page["items"]].count(True) == 1
        one = await api.ok("GET", "/workers", params={"limit": 1, "order": "desc"})
        assert one["items"][0]["id"] == max(w.id for w in workers)
        stats = await api.ok("GET", "/stats")
        assert stats["workers"] == {"running": 2, "leader": page["leader"]}
    finally:
        for worker in workers:
            worker.stop(grace=1)
        await asyncio.gather(*tasks)


async def schedule(engine: Engine) -> None:
    engine.schedule("nightly", "0 3 * * *", "noop")
    engine.schedule("hourly", "@hourly", "send", 1, queue="cron")
    await engine.apply_schedules()


async def test_cron_list_show_trigger_enable_disable(api: Any) -> None:
    await schedule(api.engine)
    page = await api.ok("GET", "/cron")
    assert [c["name"] for c in page["items"]] == ["hourly", "nightly"]
    entry = await api.ok("GET", "/cron/hourly")
    assert (entry["expr"], entry["job_name"], entry["payload"], entry["enabled"]) == (
        "@hourly",
        "send",
        1,
        True,
    )
    # The next five ticks, from next_run_at on, one hour apart for @hourly.
    ticks = [datetime.fromisoformat(t) for t in entry["next_runs"]]
    assert len(ticks) == 5
    assert ticks[0] == datetime.fromisoformat(entry["next_run_at"])
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(ticks))
    assert all(t.minute == 0 and t.second == 0 for t in ticks)
    job = await api.ok("POST", "/cron/hourly/trigger", 201)
    assert (job["name"], job["queue"], job["payload"]) == ("send", "cron", 1)
    disabled = await api.ok("POST", "/cron/nightly/disable")
    assert (disabled["enabled"], disabled["next_runs"]) == (False, [])
    assert (await api.ok("GET", "/cron/nightly"))["enabled"] is False
    assert (await api.ok("POST", "/cron/nightly/enable"))["enabled"] is True
    for path in ("/cron/nope", "/cron/nope/trigger", "/cron/nope/enable", "/cron/nope/disable"):
        method = "GET" if path == "/cron/nope" else "POST"
        api.error(await api.request(method, path), 404, "not_found")
