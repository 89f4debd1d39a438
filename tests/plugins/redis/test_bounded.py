"""The stats, listing and retention calls do bounded work per script and stay exact.

Counts, throughput, listings, dead-letter counts and purges, queue figures, workers, cron
entries, rescue and prune are compared with a brute-force answer computed from every job and
entry, once with the store's bounds and once with bounds so small that every path (the direct
intersections, the walks, the derived counts, many steps per call) is taken.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from dispatch_core._ids import new_id
from dispatch_core.cluster import WorkerInfo, WorkerState
from dispatch_core.cron import CronEntry
from dispatch_core.models import (
    DLQEntry,
    DLQFilter,
    Job,
    JobFilter,
    Outcome,
    OutcomeKind,
    SortOrder,
    utcnow,
)
from dispatch_core.states import JobState
from dispatch_core.store import PruneCutoffs
from dispatch_core.testing import make_new_job
from dispatch_plugins.redis import RedisStore, codec as c
from dispatch_plugins.redis.ops import common as bounds_module

TENANTS = [None, "a", "b"]
QUEUES = ["q1", "q2", "q3"]
NAMES = ["n1", "n2"]
TINY = {
    "WALK_CHUNK": 3,
    "COUNT_BUDGET": 0,
    "DELETE_CHUNK": 2,
    "PAGE_EXAMINE": 3,
    "PAGE_ITEMS": 2,
    "BUCKET_STEPS": 2,
    "QUEUE_CHUNK": 2,
    "RESCUE_CHUNK": 2,
}


@pytest.fixture(params=["store bounds", "tiny bounds"])
def bounds(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """The scripts called, by name; with tiny bounds, every step is a few entries."""
    calls: Counter[str] = Counter()
    if request.param == "tiny bounds":
        for name, value in TINY.items():
            monkeypatch.setattr(bounds_module, name, value)
        calls["tiny"] = 1
    real = RedisStore._call

    async def counted(self: RedisStore, name: str, *args: Any) -> Any:
        calls[name] += 1
        return await real(self, name, *args)

    monkeypatch.setattr(RedisStore, "_call", counted)
    return calls


@dataclass
class World:
    t0: datetime
    jobs: dict[str, Job] = field(default_factory=dict)
    dlq: dict[str, DLQEntry] = field(default_factory=dict)


async def _build(store: RedisStore, seed: int) -> World:
    """About 150 jobs of three tenants (and none), three queues and two names in every state,
    finished over the last two hours; their dead letters, some replayed."""
    rng = random.Random(seed)
    now = utcnow()
    world = World(t0=now - timedelta(hours=2))
    news = [
        make_new_job(
            rng.choice(NAMES),
            queue=rng.choice(QUEUES),
            tenant=rng.choice(TENANTS),
            max_attempts=1,
        )
        for _ in range(120)
    ]
    await store.enqueue(news)
    claimed = await store.claim(
        worker_id="wkr_b", queues=None, names=None, limit=500, lease_seconds=3600, now=utcnow()
    )
    assert len(claimed) == len(news)
    for job in claimed:
        at = world.t0 + timedelta(seconds=rng.randrange(0, 7200))
        roll = rng.random()
        token = job.attempt_token or ""
        if roll < 0.35:
            outcome = Outcome(job_id=job.id, attempt_token=token, kind=OutcomeKind.COMPLETED)
        elif roll < 0.6:
            outcome = Outcome(job_id=job.id, attempt_token=token, kind=OutcomeKind.FAIL, error="x")
        elif roll < 0.7:
            outcome = Outcome(
                job_id=job.id,
                attempt_token=token,
                kind=OutcomeKind.RETRY,
                run_at=now + timedelta(hours=1),
            )
        elif roll < 0.85:
            await store.cancel(job.id, now=at)
            continue
        else:
            continue  # stays running
        assert await store.finish([outcome], now=at) == [True]
    # pending ones: due and delayed
    await store.enqueue(
        [
            make_new_job(
                rng.choice(NAMES),
                queue=rng.choice(QUEUES),
                tenant=rng.choice(TENANTS),
                run_at=now + timedelta(seconds=rng.choice([0, 0, 600])),
            )
            for _ in range(30)
        ]
    )
    for job in await store.list_jobs(JobFilter(limit=10_000)):
        world.jobs[job.id] = job
    for entry in await store.list_dlq(DLQFilter(limit=10_000)):
        if rng.random() < 0.4:
            await store.replay_dlq(entry.id, new_job_id=new_id("job"), now=utcnow())
    for job in await store.list_jobs(JobFilter(limit=10_000)):
        world.jobs[job.id] = job
    for entry in await store.list_dlq(DLQFilter(limit=10_000)):
        world.dlq[entry.id] = entry
    assert {j.state for j in world.jobs.values()} == set(JobState)
    return world


def _jobs(world: World, **want: object) -> list[Job]:
    return [
        j
        for j in world.jobs.values()
        if all(v is None or getattr(j, k) == v for k, v in want.items())
    ]


async def test_counts_throughput_and_listings_match_brute_force(
    store: RedisStore, bounds: Counter[str]
) -> None:
    world = await _build(store, seed=16)
    for queue, tenant in itertools.product([None, *QUEUES, "nope"], [None, *TENANTS[1:], "z"]):
        expected: dict[JobState, int] = {}
        for j in _jobs(world, queue=queue, tenant=tenant):
            expected[j.state] = expected.get(j.state, 0) + 1
        assert await store.count_jobs(queue=queue, tenant=tenant) == expected, (queue, tenant)

        for bucket in (60, 600, 7200):
            since = world.t0 + timedelta(seconds=1234)
            width = bucket * 1_000_000
            want: dict[int, list[int]] = {}
            for j in _jobs(world, queue=queue, tenant=tenant):
                done = j.finished_at
                if j.state in (JobState.COMPLETED, JobState.FAILED) and done and done >= since:
                    slot = int(c.us(done)) // width
                    want.setdefault(slot, [0, 0])[j.state is JobState.FAILED] += 1
            buckets = await store.throughput(
                since=since, bucket_seconds=bucket, queue=queue, tenant=tenant
            )
            assert {
                int(b.start.timestamp()) // bucket: [b.completed, b.failed] for b in buckets
            } == want, (queue, tenant, bucket)
            assert [b.start for b in buckets] == sorted(b.start for b in buckets)

    filters = itertools.product(
        [None, JobState.COMPLETED, JobState.PENDING], [None, "q1"], [None, "n2"], [None, "a"]
    )
    for state, queue, name, tenant in filters:
        ids = sorted(j.id for j in _jobs(world, state=state, queue=queue, name=name, tenant=tenant))
        for order in SortOrder:
            ordered = ids if order is SortOrder.ASC else ids[::-1]
            base = JobFilter(state=state, queue=queue, name=name, tenant=tenant, order=order)
            got = await store.list_jobs(attrs.evolve(base, limit=10_000))
            assert [j.id for j in got] == ordered
            # pages of 4 by cursor, and by offset
            paged: list[str] = []
            after = None
            while True:
                page = await store.list_jobs(attrs.evolve(base, limit=4, after=after))
                paged += (j.id for j in page)
                if len(page) < 4:
                    break
                after = page[-1].id
            assert paged == ordered
            offset = await store.list_jobs(attrs.evolve(base, limit=5, offset=3))
            assert [j.id for j in offset] == ordered[3:8]
    if bounds["tiny"]:  # the walks were taken, in many steps
        assert bounds["walk"] > 100
        assert bounds["buckets"] > 100
        assert bounds["page"] > 1000


async def test_dead_letter_counts_lists_and_purges_match_brute_force(
    store: RedisStore, bounds: Counter[str]
) -> None:
    world = await _build(store, seed=61)
    entries = list(world.dlq.values())
    assert any(e.replayed_at for e in entries)
    assert any(not e.replayed_at for e in entries)
    times = sorted(e.failed_at for e in entries)
    cuts = [None, times[len(times) // 2], times[-1] + timedelta(seconds=1), world.t0]
    for queue, tenant, replayed, before in itertools.product(
        [None, *QUEUES], [None, "a", "b"], [None, True, False], cuts
    ):
        want = [
            e
            for e in entries
            if (queue is None or e.queue == queue)
            and (tenant is None or e.tenant == tenant)
            and (replayed is None or bool(e.replayed_at) == replayed)
            and (before is None or e.failed_at < before)
        ]
        got = await store.count_dlq(queue=queue, tenant=tenant, replayed=replayed, before=before)
        assert got == len(want), (queue, tenant, replayed, before)
        if before is None:
            listed = await store.list_dlq(
                DLQFilter(queue=queue, tenant=tenant, replayed=replayed, limit=10_000)
            )
            assert [e.id for e in listed] == sorted(e.id for e in want)

    # purges: a tenant's, bounded and oldest first; a queue's; everything
    a_old = sorted((e for e in entries if e.tenant == "a"), key=lambda e: (e.failed_at, e.id))
    cut = times[-1] + timedelta(seconds=1)
    assert await store.purge_dlq(before=cut, tenant="a", limit=3) == min(3, len(a_old))
    left = {e.id for e in await store.list_dlq(DLQFilter(tenant="a", limit=10_000))}
    assert left == {e.id for e in a_old[3:]}
    assert await store.purge_dlq(before=cut, tenant="a") == max(0, len(a_old) - 3)
    q1 = [e for e in entries if e.queue == "q1" and e.tenant != "a"]
    assert await store.purge_dlq(before=cut, queue="q1") == len(q1)
    rest = len(entries) - len(a_old) - len(q1)
    assert await store.purge_dlq(before=cut, limit=1) == min(1, rest)
    assert await store.purge_dlq(before=cut) == max(0, rest - 1)
    assert await store.count_dlq() == 0
    if bounds["tiny"]:
        assert bounds["walk"] > 100
        assert bounds["purge_walk"] > 5
        assert bounds["delete_dlqs"] >= 2  # a tenant's oldest, gathered from its own index
        assert bounds["prune_dlq"] > 3


async def test_queues_workers_cron_rescue_and_prune(
    store: RedisStore, bounds: Counter[str]
) -> None:
    world = await _build(store, seed=7)
    now = utcnow()
    stats = await store.list_queues(now=now)
    assert [q.name for q in stats] == QUEUES
    for q in stats:
        jobs = _jobs(world, queue=q.name)
        waiting = [j for j in jobs if j.state in (JobState.PENDING, JobState.RETRYING)]
        assert q.depth == len(waiting)
        assert q.running == sum(j.state is JobState.RUNNING for j in jobs)

    t = datetime(2030, 1, 1, tzinfo=UTC)
    workers = [
        WorkerInfo(
            id=new_id("wkr"),
            hostname="h",
            pid=i,
            queues=None,
            concurrency=1,
            version="0",
            started_at=t + timedelta(seconds=i // 2),  # pairs share a start time
            last_seen=t,
            state=WorkerState.STOPPED if i % 3 == 0 else WorkerState.RUNNING,
        )
        for i in range(7)
    ]
    for w in workers:
        await store.register_worker(w)
    listed = await store.list_workers()
    assert sorted(w.id for w in listed) == sorted(w.id for w in workers)
    assert [w.started_at for w in listed] == sorted(w.started_at for w in listed)
    entries = [
        CronEntry(
            name=f"cron-{i}",
            expr="* * * * *",
            job_name="n1",
            next_run_at=t,
            created_at=t,
            updated_at=t,
        )
        for i in range(5)
    ]
    await store.upsert_cron(entries, now=t)
    assert [e.name for e in await store.list_cron()] == [e.name for e in entries]

    # every running job's lease expires: rescue takes them all, whatever the step size
    running = {j.id for j in _jobs(world, state=JobState.RUNNING)}
    assert running
    rescued = await store.rescue_expired(now=now + timedelta(hours=2))
    assert {j.id for j in rescued} == running
    assert all(j.state is JobState.FAILED for j in rescued)  # max_attempts=1

    # stopped workers' rows go; running ones stay
    pruned = await store.prune(PruneCutoffs(workers=t + timedelta(days=1)), limit=2)
    assert pruned == 2
    pruned = await store.prune(PruneCutoffs(workers=t + timedelta(days=1)))
    assert pruned == sum(w.state is WorkerState.STOPPED for w in workers) - 2
    finished = {s: len(_jobs(world, state=s)) for s in (JobState.COMPLETED, JobState.CANCELLED)}
    cut = now + timedelta(days=1)
    assert await store.prune(PruneCutoffs(completed=cut), limit=3) == 3
    assert await store.prune(PruneCutoffs(completed=cut, cancelled=cut)) == (
        finished[JobState.COMPLETED] - 3 + finished[JobState.CANCELLED]
    )
    counts = await store.count_jobs()
    assert JobState.COMPLETED not in counts
    assert JobState.CANCELLED not in counts
    for tenant in ("a", "b"):
        assert JobState.COMPLETED not in await store.count_jobs(tenant=tenant)
        buckets = await store.throughput(since=world.t0, bucket_seconds=60, tenant=tenant)
        assert buckets
        assert all(b.completed == 0 for b in buckets)
    assert await store.prune(PruneCutoffs(failed=cut, dlq=cut)) > 0
    assert await store.count_dlq() == 0
    assert await store.throughput(since=world.t0, bucket_seconds=60) == []
    if bounds["tiny"]:
        assert bounds["queue_stats"] == 2
        assert bounds["zhashes"] >= 3
        assert bounds["rescue"] > 2
        assert bounds["prune_jobs"] > 10
        assert bounds["prune_workers"] > 2
