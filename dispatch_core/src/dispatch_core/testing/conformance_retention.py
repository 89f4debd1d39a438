"""The conformance suite on retention: what ``prune`` deletes, and how many rows per call.
Part of :class:`~dispatch_core.testing.ClusterConformance`, under the same rules."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from dispatch_core.cluster import WorkerState
from dispatch_core.errors import JobNotFoundError
from dispatch_core.models import DLQFilter, Job, JobFilter, OutcomeKind
from dispatch_core.states import JobState
from dispatch_core.store import PruneCutoffs, Store
from dispatch_core.testing._helpers import (
    StoreFactory,
    _claim,
    _finish,
    _run,
    _s,
    _t0,
    make_new_job,
)
from dispatch_core.testing.conformance_workers import _worker

__all__ = ["RetentionConformance"]


class RetentionConformance:
    """The retention rules of :class:`dispatch_core.store.Store`, as tests."""

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        raise NotImplementedError("a conformance subclass must define the store_factory fixture")

    # -- retention ---------------------------------------------------------------------------------

    def test_prune_deletes_old_finished_rows(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t = _t0()
            old, cut = t - timedelta(days=10), t - timedelta(days=1)
            jobs: dict[str, Job] = {}

            async def make(key: str, **kw: Any) -> Job:
                (job,) = await store.enqueue([make_new_job(queue=f"prune-{key}", **kw)])
                jobs[key] = job
                return job

            async def claimed(key: str, now: datetime, **kw: Any) -> Job:
                await make(key, **kw)
                (job,) = await _claim(store, queues=[f"prune-{key}"], now=now)
                return job

            assert await _finish(store, await claimed("c_old", t, unique_key="pk"), now=old)
            assert await _finish(store, await claimed("c_new", t), now=t)
            for key, when in (("f_old", old), ("f_new", t)):
                job = await claimed(key, t, max_attempts=1)
                assert await _finish(store, job, OutcomeKind.FAIL, error="x", now=when)
            await store.cancel((await make("x_old")).id, now=old)
            await store.cancel((await make("x_new")).id, now=t)
            await make("pending", run_at=old)
            await claimed("running", old, run_at=old)
            job = await claimed("retrying", old, run_at=old)
            assert await _finish(
                store, job, OutcomeKind.RETRY, error="x", run_at=t + _s(3600), now=old
            )
            workers = {
                "stopped_old": _worker(now=old, state=WorkerState.STOPPED),
                "dead_old": _worker(now=old, state=WorkerState.DEAD),
                "running_old": _worker(now=old),
                "stopped_new": _worker(now=t, state=WorkerState.STOPPED),
            }
            for w in workers.values():
                await store.register_worker(w)

            async def job_keys() -> set[str]:
                ids = {j.id for j in await store.list_jobs(JobFilter(limit=1000))}
                return {k for k, j in jobs.items() if j.id in ids}

            # only the kinds with a cutoff are pruned
            assert await store.prune(PruneCutoffs(completed=cut)) == 1
            assert await job_keys() == set(jobs) - {"c_old"}
            assert len(await store.list_dlq(DLQFilter())) == 2
            with pytest.raises(JobNotFoundError):
                await store.get_job(jobs["c_old"].id)
            everything = PruneCutoffs(
                completed=cut, failed=cut, cancelled=cut, dlq=cut, workers=cut
            )
            assert await store.prune(everything) == 5
            assert await job_keys() == {
                "c_new",
                "f_new",
                "x_new",
                "pending",
                "running",
                "retrying",
            }
            assert [e.job_id for e in await store.list_dlq(DLQFilter())] == [jobs["f_new"].id]
            assert {w.id for w in await store.list_workers()} == {
                workers["running_old"].id,
                workers["stopped_new"].id,
            }
            assert await store.prune(everything) == 0
            # a pruned job's unique key is free again
            (fresh,) = await store.enqueue([make_new_job(unique_key="pk")])
            assert fresh.id != jobs["c_old"].id

        _run(store_factory, body)

    def test_prune_limit_caps_rows_per_kind(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t = _t0()
            old, cut = t - timedelta(days=10), t - timedelta(days=1)
            await store.enqueue(
                [make_new_job(queue="c") for _ in range(5)]
                + [make_new_job(queue="f", max_attempts=1) for _ in range(3)]
            )
            for job in await _claim(store, limit=10, queues=["c"], now=t):
                assert await _finish(store, job, now=old)
            for job in await _claim(store, limit=10, queues=["f"], now=t):
                assert await _finish(store, job, OutcomeKind.FAIL, error="x", now=old)
            for _ in range(3):
                await store.register_worker(_worker(now=old, state=WorkerState.STOPPED))
            cutoffs = PruneCutoffs(completed=cut, dlq=cut, workers=cut)
            assert await store.prune(cutoffs, limit=2) == 6  # 2 jobs, 2 entries, 2 workers
            assert await store.prune(cutoffs, limit=2) == 4  # 2 jobs, 1 entry, 1 worker
            assert await store.prune(cutoffs, limit=2) == 1
            assert await store.prune(cutoffs, limit=2) == 0
            counts = await store.count_jobs()
            assert counts.get(JobState.COMPLETED, 0) == 0
            assert counts.get(JobState.FAILED) == 3  # no cutoff for failed jobs
            assert await store.list_dlq(DLQFilter()) == []
            assert await store.list_workers() == []

        _run(store_factory, body)
