"""``/v1/stats`` and the health probes, including a store that is down or hangs."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest

from dispatch_core import Engine, StoreUnavailableError
from dispatch_plugins.admin.routes import health


async def test_stats_for_an_operator(api: Any, world: Any) -> None:
    stats = await api.ok("GET", "/stats", params={"window": 600, "bucket": 60})
    assert set(stats) == {"jobs", "dlq", "throughput", "unhandled", "queues", "workers"}
    # Per tenant: two pending jobs (one delayed, the waiting run's timeout), one failed.
    assert stats["jobs"]["pending"] == 4
    assert stats["jobs"]["failed"] == 2
    assert stats["dlq"] == 2
    buckets = stats["throughput"]
    assert 10 <= len(buckets) <= 11
    starts = [datetime.fromisoformat(b["start"]) for b in buckets]
    assert starts == sorted(starts)
    assert all(s.second == 0 for s in starts)
    assert sum(b["failed"] for b in buckets) == 2
    assert sum(b["completed"] for b in buckets) >= 2
    assert [q["name"] for q in stats["queues"]] == ["default"]
    assert stats["workers"] == {"running": 0, "leader": None}
    # Nothing runnable waits (the pending jobs are due in an hour).
    assert stats["unhandled"] == []


async def test_stats_for_a_tenant_leave_out_the_cluster(api: Any, world: Any) -> None:
    stats = await api.ok("GET", "/stats", token=api.A)
    assert stats["queues"] is None
    assert stats["workers"] is None
    assert stats["dlq"] == 1
    assert stats["jobs"]["failed"] == 1
    assert stats["jobs"]["pending"] == 2
    assert len(stats["throughput"]) in (60, 61)  # the defaults: an hour by the minute


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"window": "5"}, "window"),
        ({"window": str(7 * 86400 + 1)}, "window"),
        ({"bucket": "9"}, "bucket"),
        ({"window": "60", "bucket": "120"}, "bucket"),
        ({"window": str(7 * 86400), "bucket": "60"}, "bucket"),
        ({"window": "1h"}, "window"),
    ],
)
async def test_stats_validation(api: Any, params: dict[str, str], field: str) -> None:
    error = api.error(await api.get("/stats", params=params), 400, "invalid_request")
    assert error["details"]["field"] == field


async def test_health_needs_no_token(api: Any) -> None:
    assert await api.ok("GET", "/health/live", token=None) == {"status": "ok"}
    assert await api.ok("GET", "/health/ready", token=None) == {"status": "ok", "store": "ok"}
    assert await api.ok("GET", "/health/live", token="wrong") == {"status": "ok"}


async def test_a_store_that_cannot_open_is_503(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse() -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(api.engine.store, "open", refuse)
    error = api.error(await api.get("/health/ready", token=None), 503, "store_unavailable")
    assert "not ready" in error["message"]
    api.error(await api.get("/jobs"), 503, "store_unavailable")
    api.error(await api.get("/runs/wfrun_1"), 503, "store_unavailable")
    # What needs no store is still answered.
    api.error(await api.post("/jobs", json={"name": "x"}), 422, "unknown_job")
    assert (await api.get("/health/live", token=None)).status_code == 200


async def test_a_hanging_store_fails_readiness(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def hang() -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(health, "READY_TIMEOUT", 0.01)
    monkeypatch.setattr(api.engine, "aleader", hang)
    error = api.error(await api.get("/health/ready", token=None), 503, "store_unavailable")
    assert "timed out" in error["message"]


@pytest.mark.parametrize(
    "exc", [StoreUnavailableError("db down"), ConnectionRefusedError("refused"), TimeoutError()]
)
async def test_store_errors_are_503(
    api: Any, monkeypatch: pytest.MonkeyPatch, exc: Exception
) -> None:
    async def broken(**_: Any) -> None:
        raise exc

    monkeypatch.setattr(api.engine, "alist_jobs", broken)
    api.error(await api.get("/jobs"), 503, "store_unavailable")


async def test_a_bug_is_a_500_with_the_error_body(
    engine: Engine, make_api: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    async def buggy(**_: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(engine, "alist_jobs", buggy)
    async with make_api(raise_app_exceptions=False) as api:
        error = api.error(await api.get("/jobs"), 500, "internal_error")
    assert "bug" not in error["message"]
    assert "unexpected error in GET /dispatch/v1/jobs" in caplog.text
