"""The cluster on the memory store: worker rows, the leader, leader-only rescue, cron, queue
limits, pause and retention, through real workers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from dispatch_core import (
    ConfigurationError,
    Constant,
    CronExpressionError,
    CronNotFoundError,
    Engine,
    JobContext,
    JobState,
    MisfirePolicy,
    Retention,
    UnknownJobError,
    Worker,
    WorkerInfo,
    WorkerState,
)
from dispatch_core.cron import cron_unique_key
from dispatch_core.models import utcnow
from dispatch_core.stores import MemoryStore
from dispatch_core.testing import capture_events

FAST = {"heartbeat_interval": 0.05, "worker_timeout": 0.3, "rescue_interval": 0.05}


def make_engine(store: MemoryStore | None = None, **kw: object) -> Engine:
    return Engine(
        store or MemoryStore(),
        load_entrypoints=False,
        backoff=Constant(interval=0),
        **kw,  # type: ignore[arg-type]
    )


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def stop(worker: Worker, task: asyncio.Task[object]) -> None:
    worker.stop(grace=1)
    await asyncio.wait_for(task, 5)


# -- worker rows ----------------------------------------------------------------------------------


async def test_worker_registers_heartbeats_and_stops() -> None:
    engine = make_engine()
    w = engine.worker(concurrency=3, queues=["a", "b"], **FAST)  # type: ignore[arg-type]
    task = asyncio.ensure_future(w.run())

    async def registered() -> bool:
        return any(r.id == w.id for r in await engine.aworkers())

    await wait_for(registered)
    [row] = await engine.aworkers()
    assert (row.pid, row.hostname, row.queues, row.concurrency) == (
        w.pid,
        w.hostname,
        ("a", "b"),
        3,
    )
    assert row.state is WorkerState.RUNNING
    first_seen = row.last_seen

    async def heartbeated() -> bool:
        return (await engine.aworkers())[0].last_seen > first_seen

    await wait_for(heartbeated)
    await stop(w, task)
    [row] = await engine.aworkers()
    assert row.state is WorkerState.STOPPED
    assert await engine.aleader() is None  # the stopping leader handed the lease back


async def test_exactly_one_leader_and_handover_when_it_stops() -> None:
    store = MemoryStore()
    engines = [make_engine(store) for _ in range(3)]
    workers = [e.worker(**FAST, leader_ttl=0.5) for e in engines]  # type: ignore[arg-type]
    tasks = [asyncio.ensure_future(w.run()) for w in workers]

    async def has_leader() -> bool:
        return await engines[0].aleader() is not None

    await wait_for(has_leader)
    await asyncio.sleep(0.2)
    leaders = [w for w in workers if w.leader is not None and w.leader.is_leader]
    assert len(leaders) == 1
    first = leaders[0]
    assert await engines[0].aleader() == first.id
    rows = {r.id: r for r in await engines[0].aworkers()}
    assert rows[first.id].leader
    assert sum(r.leader for r in rows.values()) == 1

    i = workers.index(first)
    await stop(first, tasks[i])

    async def new_leader() -> bool:
        lead = await engines[0].aleader()
        return lead is not None and lead != first.id

    t0 = time.monotonic()
    await wait_for(new_leader)
    assert time.monotonic() - t0 < 1.0  # released at stop: no need to wait for the TTL
    for w, t in zip(workers, tasks, strict=True):
        if w is not first:
            await stop(w, t)


# -- rescue ---------------------------------------------------------------------------------------


async def test_leader_rescues_a_dead_worker_s_job_long_before_its_lease_ends() -> None:
    engine = make_engine()
    runs: list[int] = []

    @engine.job(name="work")
    async def work(ctx: JobContext, n: int) -> None:
        runs.append(ctx.attempt)

    job = await work.aenqueue(1)
    await engine.aopen()
    old = utcnow() - timedelta(seconds=60)
    dead = WorkerInfo(
        id="wkr_dead",
        hostname="gone",
        pid=1,
        queues=None,
        concurrency=1,
        version="0",
        started_at=old,
        last_seen=old,
    )
    await engine.store.register_worker(dead)
    [claimed] = await engine.store.claim(
        worker_id=dead.id, queues=None, names=None, limit=1, lease_seconds=600, now=utcnow()
    )
    assert claimed.id == job.id

    w = engine.worker(**FAST)  # type: ignore[arg-type]
    with capture_events(engine) as events:
        task = asyncio.ensure_future(w.run())

        async def done() -> bool:
            return (await engine.aget_job(job.id)).state is JobState.COMPLETED

        await wait_for(done)
        await stop(w, task)
    assert runs == [2]  # the dead worker's attempt counted
    assert w.stats.rescued == 1
    assert len(events.of("job_retrying")) == 1
    rows = {r.id: r for r in await engine.aworkers()}
    assert rows["wkr_dead"].state is WorkerState.DEAD


async def test_a_non_leader_does_not_rescue() -> None:
    engine = make_engine()

    @engine.job(name="work")
    async def work(n: int) -> None:
        pass

    job = await work.aenqueue(1)
    await engine.aopen()
    [claimed] = await engine.store.claim(
        worker_id="wkr_gone", queues=None, names=None, limit=1, lease_seconds=0.01, now=utcnow()
    )
    w = engine.worker(lead=False, **FAST)  # type: ignore[arg-type]
    task = asyncio.ensure_future(w.run())
    await asyncio.sleep(0.5)
    assert (await engine.aget_job(job.id)).state is JobState.RUNNING
    assert w.stats.rescued == 0
    await stop(w, task)
    assert claimed.id == job.id


async def test_after_losing_the_store_the_leader_waits_a_worker_timeout_before_rescuing() -> None:
    engine = make_engine()
    w = engine.worker(**FAST)  # type: ignore[arg-type]
    assert w.store_contact_for(0.0)
    assert not w.store_contact_for(10.0)  # counted from its start: it may follow an outage
    w.store_failed()
    assert not w.store_contact_for(0.0)
    w.store_ok()
    assert not w.store_contact_for(0.2)
    await asyncio.sleep(0.25)
    assert w.store_contact_for(0.2)


def test_worker_timeout_must_exceed_the_heartbeat() -> None:
    engine = make_engine()
    with pytest.raises(ConfigurationError, match="worker_timeout"):
        engine.worker(heartbeat_interval=2, worker_timeout=1)


# -- cron -----------------------------------------------------------------------------------------


def test_bad_cron_expressions_are_refused_at_registration() -> None:
    engine = make_engine()
    with pytest.raises(CronExpressionError, match="has 7 fields"):

        @engine.cron("* * * * * * *")
        async def a() -> None: ...

    with pytest.raises(CronExpressionError, match=r"99 \* \* \* \*"):

        @engine.cron("99 * * * *")
        async def b() -> None: ...

    with pytest.raises(CronExpressionError, match="unknown timezone 'Nowhere/City'"):

        @engine.cron("@hourly", timezone="Nowhere/City")
        async def c() -> None: ...

    with pytest.raises(UnknownJobError):
        engine.schedule("x", "@daily", "no.such.job")
    assert engine.cron_specs == {}


async def test_cron_fires_each_tick_once_and_disable_enable_persist() -> None:
    engine = make_engine()
    ticks: list[str] = []

    @engine.cron("* * * * * *", name="every.second")
    async def every_second(ctx: JobContext) -> None:
        ticks.append(ctx.job.headers["dispatch-cron-tick"])

    w = engine.worker(**FAST)  # type: ignore[arg-type]
    with capture_events(engine) as events:
        task = asyncio.ensure_future(w.run())

        async def fired_twice() -> bool:
            return len(ticks) >= 2

        await wait_for(fired_twice, timeout=5)
        entry = await engine.adisable_cron("every.second")
        assert not entry.enabled
        await asyncio.sleep(0.3)  # let a tick that was in flight land
        count = len(ticks)
        await asyncio.sleep(1.5)
        assert len(ticks) == count  # disabled: nothing more
        entry = await engine.aenable_cron("every.second")
        assert entry.enabled
        assert entry.next_run_at > utcnow() - timedelta(seconds=1)

        async def fired_again() -> bool:
            return len(ticks) > count

        await wait_for(fired_again, timeout=5)
        await stop(w, task)
    assert len(ticks) == len(set(ticks))
    fired = events.of("cron_fired")
    assert fired
    assert all(e.args["entry_name"] == "every.second" for e in fired)
    [entry] = await engine.acron_entries()
    assert entry.last_job_id is not None
    job = await engine.aget_job(entry.last_job_id)
    assert job.unique_key is not None
    assert job.unique_key.startswith("cron:every.second:")


async def test_cron_with_payload_trigger_and_unschedule() -> None:
    engine = make_engine()
    seen: list[int] = []

    @engine.job(name="report")
    async def report(n: int) -> None:
        seen.append(n)

    engine.schedule("nightly", "0 3 * * *", report, 7, timezone="Europe/Paris")
    await engine.apply_schedules()
    [entry] = await engine.acron_entries()
    assert (entry.job_name, entry.payload, entry.timezone) == ("report", 7, "Europe/Paris")
    job = await engine.atrigger_cron("nightly")
    await engine.drain()
    assert seen == [7]
    assert (await engine.aget_job(job.id)).state is JobState.COMPLETED
    assert await engine.aunschedule("nightly") is True
    with pytest.raises(CronNotFoundError):
        await engine.aget_cron("nightly")


async def test_reregistering_changes_the_schedule_but_keeps_disabled() -> None:
    store = MemoryStore()
    old = make_engine(store)

    @old.cron("0 * * * *", name="job")
    async def job_v1() -> None: ...

    await old.apply_schedules()
    await old.adisable_cron("job")

    new = make_engine(store)

    @new.cron("30 * * * *", name="job")
    async def job_v2() -> None: ...

    await new.apply_schedules()
    [entry] = await new.acron_entries()
    assert entry.expr == "30 * * * *"
    assert not entry.enabled
    assert entry.next_run_at.minute == 30


async def test_skip_policy_drops_a_tick_missed_during_downtime() -> None:
    engine = make_engine()
    ran: list[str] = []

    @engine.cron("0 0 1 1 *", name="yearly", misfire=MisfirePolicy.SKIP, misfire_grace=5)
    async def yearly(ctx: JobContext) -> None:
        ran.append(ctx.job.id)

    await engine.apply_schedules()
    # Pretend the cluster was down when the tick passed: move the tick an hour back.
    [entry] = await engine.acron_entries()
    tick = utcnow() - timedelta(hours=1)
    await engine.store.set_cron_enabled("yearly", enabled=True, next_run_at=tick, now=utcnow())
    w = engine.worker(**FAST)  # type: ignore[arg-type]
    task = asyncio.ensure_future(w.run())

    async def advanced() -> bool:
        return (await engine.aget_cron("yearly")).next_run_at > utcnow()

    await wait_for(advanced)
    await stop(w, task)
    assert ran == []
    assert not await engine.alist_jobs(name="yearly")
    assert entry.next_run_at > tick


async def test_once_policy_fires_one_job_for_many_missed_ticks() -> None:
    engine = make_engine()
    ran: list[str] = []

    @engine.cron("* * * * * *", name="s")
    async def s(ctx: JobContext) -> None:
        ran.append(ctx.job.headers["dispatch-cron-tick"])

    await engine.apply_schedules()
    missed = utcnow().replace(microsecond=0) - timedelta(seconds=30)
    await engine.store.set_cron_enabled("s", enabled=True, next_run_at=missed, now=utcnow())
    w = engine.worker(**FAST)  # type: ignore[arg-type]
    task = asyncio.ensure_future(w.run())

    async def first() -> bool:
        return bool(ran)

    await wait_for(first)
    await asyncio.sleep(0.3)
    await stop(w, task)
    assert ran[0] == missed.isoformat()  # one job for the 30 missed ticks...
    late = [t for t in ran[1:] if t < (utcnow() - timedelta(seconds=5)).isoformat()]
    assert late == []  # ...then on from now


async def test_cron_key_is_per_tick() -> None:
    t = utcnow()
    assert cron_unique_key("a", t) != cron_unique_key("a", t + timedelta(seconds=1))
    assert cron_unique_key("a", t) != cron_unique_key("b", t)


# -- queues ---------------------------------------------------------------------------------------


async def test_queue_concurrency_cap_holds_across_two_workers() -> None:
    store = MemoryStore()
    engines = [make_engine(store) for _ in range(2)]
    running = 0
    peak = 0

    for e in engines:
        e.queue("narrow", concurrency=2)

        @e.job(name="slow", queue="narrow")
        async def slow(n: int) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.05)
            running -= 1

    for n in range(10):
        await engines[0].aenqueue("slow", n)
    results = await asyncio.gather(*(e.drain(concurrency=10) for e in engines))
    assert sum(r.completed for r in results) == 10
    assert peak == 2


async def test_rate_limit_spaces_the_starts() -> None:
    engine = make_engine()
    engine.queue("metered", rate=20, burst=1)
    starts: list[float] = []

    @engine.job(name="tick", queue="metered")
    async def tick(n: int) -> None:
        starts.append(time.monotonic())

    for n in range(6):
        await tick.aenqueue(n)
    await engine.drain(wait_scheduled=True)
    assert len(starts) == 6
    span = starts[-1] - starts[0]
    assert span >= 5 / 20 * 0.8  # 6 starts at 20/s with a bucket of one: >= ~0.25 s


async def test_pause_and_resume_a_queue() -> None:
    engine = make_engine()
    done: list[int] = []

    @engine.job(name="p", queue="held")
    async def p(n: int) -> None:
        done.append(n)

    @engine.job(name="free", queue="open")
    async def free(n: int) -> None:
        done.append(-n)

    await engine.apause_queue("held")
    await p.aenqueue(1)
    await free.aenqueue(1)
    await engine.drain()
    assert done == [-1]
    stats = {q.name: q for q in await engine.aqueues()}
    assert stats["held"].paused
    assert stats["held"].depth == 1
    await engine.aresume_queue("held")
    await engine.drain()
    assert done == [-1, 1]


# -- retention ------------------------------------------------------------------------------------


async def test_leader_prunes_old_finished_jobs() -> None:
    engine = make_engine(retention=Retention(completed=timedelta(milliseconds=50), interval=0.05))

    @engine.job(name="quick")
    async def quick(n: int) -> None:
        pass

    job = await quick.aenqueue(1)
    keep = await quick.aenqueue(2, delay=60)
    w = engine.worker(**FAST)  # type: ignore[arg-type]
    task = asyncio.ensure_future(w.run())

    async def pruned() -> bool:
        return not [j for j in await engine.alist_jobs() if j.id == job.id]

    await wait_for(pruned)
    await stop(w, task)
    assert (await engine.aget_job(keep.id)).state is JobState.PENDING


async def test_no_retention_keeps_everything() -> None:
    engine = make_engine(retention=None)

    @engine.job(name="quick")
    async def quick(n: int) -> None:
        pass

    await quick.aenqueue(1)
    await engine.drain()
    assert await engine.aprune() == 0
    assert len(await engine.alist_jobs(state=JobState.COMPLETED)) == 1
    deleted = await engine.aprune(Retention(completed=timedelta(microseconds=1)))
    assert deleted == 1
