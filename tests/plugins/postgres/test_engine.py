"""The plugin as users meet it: Engine("postgresql://...") finds it and runs jobs on it."""

from __future__ import annotations

import importlib.metadata

from dispatch_core import Engine
from dispatch_core.backoff import Constant
from dispatch_core.context import JobContext
from dispatch_core.registry import StoreRegistry
from dispatch_core.states import JobState
from dispatch_plugins.postgres import PostgresStore
from dispatch_plugins.postgres.plugin import dispatch_register_stores


def test_entry_point_is_installed() -> None:
    eps = importlib.metadata.entry_points(group="dispatch_core.plugins")
    assert {ep.name: ep.value for ep in eps}.get("postgres") == "dispatch_plugins.postgres.plugin"


def test_both_schemes_are_registered() -> None:
    registry = StoreRegistry()
    dispatch_register_stores(registry)
    assert {"postgresql", "postgres"} <= set(registry.schemes())
    for url in ("postgresql://h/db?schema=a", "postgres://h/db?schema=a"):
        store = registry.create(url)
        assert isinstance(store, PostgresStore)
        assert store.schema == "a"


async def test_engine_drains_with_retries_and_dead_letters(pg_url: str) -> None:
    engine = Engine(pg_url, backoff=Constant(interval=0))
    runs: list[tuple[int, int]] = []

    @engine.job(name="flaky", max_retries=2)
    async def flaky(ctx: JobContext, n: int) -> int:
        runs.append((n, ctx.job.attempt))
        if n % 2 and ctx.job.attempt < 2:
            raise RuntimeError(f"flaky {n}")
        return n * 10

    @engine.job(name="doomed", max_retries=1)
    def doomed(n: int) -> None:
        raise ValueError(f"never {n}")

    try:
        jobs = await engine.aenqueue_many(flaky, range(20))
        bad = await doomed.aenqueue(7)
        result = await engine.drain(concurrency=10, wait_scheduled=True, timeout=30)
        assert result.completed == 20
        assert result.retried == 10 + 1
        assert result.failed == 1
        for job in jobs:
            done = await engine.aget_job(job.id)
            assert done.state is JobState.COMPLETED
            assert done.result == done.payload * 10
            assert done.attempt == (2 if done.payload % 2 else 1)
        assert sorted(runs) == sorted(
            [(n, 1) for n in range(20)] + [(n, 2) for n in range(20) if n % 2]
        )
        (entry,) = await engine.alist_dlq()
        assert entry.job_id == bad.id
        assert entry.attempts == 2
        assert "never 7" in entry.error
        assert (await engine.aget_job(bad.id)).state is JobState.FAILED
        counts = await engine.acount_jobs()  # every state, zero when it has none
        assert {s: n for s, n in counts.items() if n} == {
            JobState.COMPLETED: 20,
            JobState.FAILED: 1,
        }
    finally:
        await engine.aclose()


async def test_engine_accepts_the_short_scheme(pg_url: str) -> None:
    engine = Engine(pg_url.replace("postgresql://", "postgres://", 1))

    @engine.job(name="hello")
    async def hello(name: str) -> str:
        return f"hello {name}"

    try:
        job = await hello.aenqueue("pg")
        assert (await engine.drain()).completed == 1
        assert (await engine.aget_job(job.id)).result == "hello pg"
    finally:
        await engine.aclose()
