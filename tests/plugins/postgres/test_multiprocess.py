"""Several worker processes, each with its own store on one schema, never share a job."""

from __future__ import annotations

import asyncio
import importlib
import json
import multiprocessing
from collections import Counter
from pathlib import Path

import pytest

from dispatch_core.models import JobFilter
from dispatch_core.states import JobState
from dispatch_core.testing import make_new_job
from dispatch_plugins.postgres import PostgresStore

HERE = Path(__file__).parent
JOBS = 2000
WORKERS = 4


@pytest.mark.slow
def test_worker_processes_run_every_job_exactly_once(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(HERE))  # spawned children import the helpers by name
    helpers = importlib.import_module("_mp_helpers")

    async def setup() -> list[str]:
        store = PostgresStore(pg_url)
        await store.open()
        await store.migrate()
        try:
            # a few priorities so the claim order has something to sort
            jobs = await store.enqueue(
                [make_new_job(payload={"i": i}, priority=i % 3) for i in range(JOBS)]
            )
            return [j.id for j in jobs]
        finally:
            await store.close()

    ids = asyncio.run(setup())
    ctx = multiprocessing.get_context("spawn")
    # Every child waits here once its store is open, and so does this process: the drain
    # starts when all claimers are ready, so they really race.
    start = ctx.Barrier(WORKERS + 1)
    outs = [tmp_path / f"worker-{n}.json" for n in range(WORKERS)]
    procs = [
        ctx.Process(target=helpers.drain, args=(pg_url, n, start, str(out)))
        for n, out in enumerate(outs)
    ]
    for p in procs:
        p.start()
    start.wait(timeout=60)
    for p in procs:
        p.join(120)
        assert p.exitcode == 0

    runs = [tuple(run) for out in outs for run in json.loads(out.read_text())]
    per_worker = [len(json.loads(out.read_text())) for out in outs]
    pairs = Counter(runs)
    assert [pair for pair, n in pairs.items() if n > 1] == []  # no (job, attempt) twice
    jobs_run = Counter(job_id for job_id, _ in runs)
    assert sorted(jobs_run) == sorted(ids)  # every job ran...
    assert set(jobs_run.values()) == {1}  # ...exactly once
    assert {attempt for _, attempt in runs} == {1}
    assert sum(per_worker) == JOBS
    assert sum(1 for n in per_worker if n) >= 2  # the processes really raced

    async def check() -> None:
        store = PostgresStore(pg_url)
        await store.open()
        try:
            assert await store.count_jobs() == {JobState.COMPLETED: JOBS}
            done = await store.list_jobs(JobFilter(limit=JOBS))
            assert {j.result["by"] for j in done} <= set(range(WORKERS))
        finally:
            await store.close()

    asyncio.run(check())
