"""The conformance suite on queues: pauses, concurrency caps, per-tenant limits, rate limits
and queue statistics. Part of :class:`~dispatch_core.testing.ClusterConformance`, under the
same rules."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import pytest

from dispatch_core.models import OutcomeKind, utcnow
from dispatch_core.queues import QueueConfig, QueueStats
from dispatch_core.states import JobState
from dispatch_core.store import Store
from dispatch_core.testing._helpers import (
    StoreFactory,
    _claim,
    _finish,
    _run,
    _s,
    _t0,
    make_new_job,
)

__all__ = ["QueueConformance"]


async def _running(store: Store, queue: str) -> int:
    return (await store.count_jobs(queue=queue)).get(JobState.RUNNING, 0)


async def _stats(store: Store, now: datetime) -> dict[str, QueueStats]:
    return {q.name: q for q in await store.list_queues(now=now)}


class QueueConformance:
    """The queue rules of :class:`dispatch_core.store.Store`, as tests."""

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        raise NotImplementedError("a conformance subclass must define the store_factory fixture")

    # -- queues ------------------------------------------------------------------------------------

    def test_paused_queue_is_not_claimed(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.enqueue(
                [make_new_job(queue="held", priority=10) for _ in range(2)]
                + [make_new_job(queue="open") for _ in range(2)]
            )
            other = store_factory()  # another process pauses it
            await other.open()
            try:
                await other.pause_queue("held", paused=True)
            finally:
                await other.close()
            claimed = await _claim(store)
            assert [j.queue for j in claimed] == ["open", "open"]
            assert await _claim(store, queues=["held"]) == []
            held = (await _stats(store, utcnow()))["held"]
            assert held.paused is True
            assert held.config is None
            assert held.depth == 2
            # running jobs of a paused queue may finish
            await store.pause_queue("open", paused=True)
            assert all([await _finish(store, j, now=utcnow()) for j in claimed])
            await store.pause_queue("held", paused=False)
            assert [j.queue for j in await _claim(store)] == ["held", "held"]
            assert (await _stats(store, utcnow()))["held"].paused is False

        _run(store_factory, body)

    def test_concurrency_cap(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.set_queue(QueueConfig(name="capped", concurrency=2))
            await store.enqueue([make_new_job(queue="capped") for _ in range(5)])
            first = await _claim(store, limit=10)
            assert len(first) == 2
            assert await _claim(store, limit=10, queues=["capped"]) == []
            assert await _finish(store, first[0], now=utcnow())
            assert len(await _claim(store, limit=10)) == 1
            assert await _claim(store, limit=10) == []
            assert await _running(store, "capped") == 2
            # a retry frees the slot as well (the job waits in its queue again)
            assert await _finish(store, first[1], OutcomeKind.RETRY, error="x", now=utcnow())
            assert len(await _claim(store, limit=10, now=utcnow() + _s(1))) == 1
            assert await _running(store, "capped") == 2

        _run(store_factory, body)

    def test_concurrency_cap_holds_across_processes(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            cap, total = 3, 24
            await store.set_queue(QueueConfig(name="capped", concurrency=cap))
            await store.enqueue([make_new_job(queue="capped") for _ in range(total)])
            others = [store_factory() for _ in range(3)]
            for other in others:
                await other.open()
            held = peak = done = 0
            deadline = time.monotonic() + 30

            async def worker(s: Store, wid: str) -> None:
                nonlocal held, peak, done
                while done < total:
                    assert time.monotonic() < deadline, "the capped queue stopped draining"
                    got = await _claim(s, limit=5, worker_id=wid)
                    # ``held`` never exceeds what the store has running, so it must obey the cap
                    held += len(got)
                    peak = max(peak, held)
                    assert held <= cap
                    if not got:
                        await asyncio.sleep(0.002)
                        continue
                    await asyncio.sleep(0.003)
                    held -= len(got)
                    for j in got:
                        assert await _finish(s, j, now=utcnow())
                    done += len(got)

            try:
                await asyncio.gather(
                    *(
                        worker(s, f"wkr_{i}_{k}")
                        for i, s in enumerate([store, *others])
                        for k in range(2)
                    )
                )
            finally:
                for other in others:
                    await other.close()
            assert done == total
            assert (await store.count_jobs(queue="capped")).get(JobState.COMPLETED) == total
            assert peak >= 1

        _run(store_factory, body)

    def test_per_tenant_limits(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.set_queue(QueueConfig(name="shared", concurrency=1, per_tenant=True))
            await store.enqueue(
                [make_new_job(queue="shared", tenant=t) for t in ("a", "a", "b", "b", None, None)]
            )
            first = await _claim(store, limit=10)
            assert {j.tenant for j in first} == {"a", "b", None}
            assert len(first) == 3
            assert await _claim(store, limit=10) == []
            (a,) = [j for j in first if j.tenant == "a"]
            assert await _finish(store, a, now=utcnow())
            assert [j.tenant for j in await _claim(store, limit=10)] == ["a"]

            # a rate per tenant: one bucket each
            t = _t0()
            await store.set_queue(QueueConfig(name="metered", rate=1.0, burst=1, per_tenant=True))
            await store.enqueue(
                [make_new_job(queue="metered", tenant=x) for x in ("a", "a", "b", "b")]
            )
            got = await _claim(store, limit=10, queues=["metered"], now=t)
            assert sorted(j.tenant or "" for j in got) == ["a", "b"]
            assert await _claim(store, limit=10, queues=["metered"], now=t + _s(0.5)) == []
            got = await _claim(store, limit=10, queues=["metered"], now=t + _s(1.5))
            assert sorted(j.tenant or "" for j in got) == ["a", "b"]

        _run(store_factory, body)

    def test_token_bucket_rate_limit(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t = _t0()
            await store.set_queue(QueueConfig(name="metered", rate=1.0, burst=3))
            await store.enqueue([make_new_job(queue="metered") for _ in range(10)])
            assert len(await _claim(store, limit=10, now=t)) == 3
            assert await _claim(store, limit=10, now=t + _s(0.5)) == []
            assert len(await _claim(store, limit=10, now=t + _s(2))) == 2
            assert await _claim(store, limit=10, now=t + _s(2)) == []
            # the bucket is shared by every process
            other = store_factory()
            await other.open()
            try:
                assert await _claim(other, limit=10, now=t + _s(2.5)) == []
                assert len(await _claim(other, limit=10, now=t + _s(3))) == 1
            finally:
                await other.close()
            # it never holds more than its size
            assert len(await _claim(store, limit=10, now=t + _s(100))) == 3

        _run(store_factory, body)

    def test_limited_queues_do_not_block_others(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t = _t0()
            await store.set_queue(QueueConfig(name="slow", rate=1.0, burst=1))
            await store.set_queue(QueueConfig(name="narrow", concurrency=1))
            await store.enqueue(
                [make_new_job(queue="slow", priority=10) for _ in range(3)]
                + [make_new_job(queue="narrow", priority=5) for _ in range(3)]
                + [make_new_job(queue="free") for _ in range(3)]
            )
            got = await _claim(store, limit=10, now=t)
            assert [j.queue for j in got] == ["slow", "narrow", "free", "free", "free"]
            # the held-back jobs are still there
            assert await _claim(store, limit=10, now=t) == []
            assert [j.queue for j in await _claim(store, limit=10, now=t + _s(1))] == ["slow"]

        _run(store_factory, body)

    def test_set_queue_keeps_pause_and_bucket(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t = _t0()
            await store.pause_queue("q", paused=True)
            config = QueueConfig(name="q", rate=1.0, burst=5)
            await store.set_queue(config)
            stats = (await _stats(store, t))["q"]
            assert stats.paused is True
            assert stats.config == config
            await store.enqueue([make_new_job(queue="q") for _ in range(20)])
            assert await _claim(store, now=t) == []
            await store.pause_queue("q", paused=False)
            assert (await _stats(store, t))["q"].config == config
            assert len(await _claim(store, limit=10, now=t)) == 5
            # new limits keep the (empty) bucket rather than filling it
            bigger = QueueConfig(name="q", rate=1.0, burst=10, concurrency=100)
            await store.set_queue(bigger)
            assert (await _stats(store, t))["q"].config == bigger
            assert await _claim(store, limit=10, now=t) == []
            assert len(await _claim(store, limit=10, now=t + _s(2))) == 2
            # a smaller bucket caps the level
            await store.set_queue(QueueConfig(name="q", rate=1.0, burst=2))
            assert len(await _claim(store, limit=10, now=t + _s(60))) == 2

        _run(store_factory, body)

    def test_list_queues_reports_depth_running_and_throughput(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            t = _t0()
            await store.enqueue(
                [make_new_job(queue="alpha") for _ in range(10)] + [make_new_job(queue="beta")]
            )
            a = await _claim(store, limit=7, queues=["alpha"], now=t)
            assert len(a) == 7
            assert await _finish(store, a[0], now=t - _s(10))
            assert await _finish(store, a[1], now=t - _s(50))
            assert await _finish(store, a[2], now=t - _s(120))  # too old to count
            assert await _finish(store, a[3], OutcomeKind.FAIL, error="x", now=t - _s(5))
            assert await _finish(
                store, a[4], OutcomeKind.RETRY, error="x", run_at=t + _s(3600), now=t - _s(5)
            )
            config = QueueConfig(name="alpha", concurrency=10, rate=5.0, burst=7)
            await store.set_queue(config)
            await store.pause_queue("gamma", paused=True)
            stats = await store.list_queues(now=t)
            assert [q.name for q in stats] == ["alpha", "beta", "gamma"]
            alpha, beta, gamma = stats
            assert alpha == QueueStats(
                name="alpha",
                config=config,
                paused=False,
                depth=4,  # three pending and one retrying later
                running=2,
                completed_last_minute=2,
            )
            assert beta == QueueStats(
                name="beta", config=None, paused=False, depth=1, running=0, completed_last_minute=0
            )
            assert gamma == QueueStats(
                name="gamma", config=None, paused=True, depth=0, running=0, completed_last_minute=0
            )

        _run(store_factory, body)
