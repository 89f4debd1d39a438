"""The cluster half of the conformance suite: workers, the leader lease, rescue by dead worker,
cron entries, queue limits and retention.

:class:`ClusterConformance` is mixed into :class:`~dispatch_core.testing.StoreConformance`, so
a backend that subclasses the suite runs these tests too. They follow the same rules: plain
synchronous tests, one ``store_factory`` fixture, several instances from it standing for
several processes on one database. Times are passed explicitly (``now=``) so that the tests
never sleep, except the leader race, which runs on the real clock for two seconds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import attrs
import pytest

from dispatch_core._ids import new_id
from dispatch_core.cluster import WorkerInfo, WorkerState
from dispatch_core.cron import CronEntry, CronSchedule, MisfirePolicy, cron_unique_key
from dispatch_core.errors import CronNotFoundError, JobNotFoundError
from dispatch_core.models import DLQFilter, Job, JobFilter, NewJob, OutcomeKind, utcnow
from dispatch_core.queues import QueueConfig, QueueStats
from dispatch_core.states import JobState
from dispatch_core.store import PruneCutoffs, Store
from dispatch_core.testing._helpers import (
    LEASE,
    StoreFactory,
    _claim,
    _finish,
    _near,
    _run,
    _s,
    _t0,
    make_new_job,
)

__all__ = ["ClusterConformance"]

_CRON_JOB = "conformance.cron"


def _worker(
    *,
    now: datetime,
    started_at: datetime | None = None,
    queues: tuple[str, ...] | None = ("default",),
    state: WorkerState = WorkerState.RUNNING,
    hostname: str = "host-a",
    pid: int = 4242,
    concurrency: int = 10,
    names: tuple[str, ...] | None = ("conformance.job",),
) -> WorkerInfo:
    return WorkerInfo(
        names=names,
        id=new_id("wkr"),
        hostname=hostname,
        pid=pid,
        queues=queues,
        concurrency=concurrency,
        version="0.0.0-conformance",
        started_at=started_at or now,
        last_seen=now,
        state=state,
    )


def _assert_worker(got: WorkerInfo, want: WorkerInfo) -> None:
    assert (got.id, got.hostname, got.pid, got.concurrency, got.version) == (
        want.id,
        want.hostname,
        want.pid,
        want.concurrency,
        want.version,
    )
    assert got.queues == want.queues
    assert got.names == want.names
    assert got.state is want.state
    assert got.leader is want.leader
    assert _near(got.started_at, want.started_at), (got.started_at, want.started_at)
    assert _near(got.last_seen, want.last_seen), (got.last_seen, want.last_seen)


async def _workers(store: Store) -> dict[str, WorkerInfo]:
    return {w.id: w for w in await store.list_workers()}


def _entry(
    name: str,
    *,
    now: datetime,
    expr: str = "*/5 * * * *",
    timezone: str = "UTC",
    job_name: str = _CRON_JOB,
    payload: object = None,
    queue: str | None = None,
    misfire: MisfirePolicy = MisfirePolicy.ONCE,
    misfire_grace: float = 60.0,
) -> CronEntry:
    """A cron entry whose ``next_run_at`` is the first tick after ``now``."""
    return CronEntry(
        name=name,
        expr=expr,
        timezone=timezone,
        job_name=job_name,
        payload=payload,
        queue=queue,
        misfire=misfire,
        misfire_grace=misfire_grace,
        next_run_at=CronSchedule(expr=expr, timezone=timezone).next_after(now),
        created_at=now,
        updated_at=now,
    )


def _assert_entry(got: CronEntry, want: CronEntry) -> None:
    fields = ("name", "expr", "timezone", "job_name", "payload", "queue", "misfire")
    assert [getattr(got, f) for f in fields] == [getattr(want, f) for f in fields]
    assert got.misfire_grace == pytest.approx(want.misfire_grace)
    assert got.enabled is want.enabled
    assert got.last_job_id == want.last_job_id
    for f in ("next_run_at", "last_run_at", "created_at", "updated_at"):
        assert _near(getattr(got, f), getattr(want, f)), (f, getattr(got, f), getattr(want, f))


def _cron_job(name: str, tick: datetime) -> NewJob:
    return make_new_job(_CRON_JOB, unique_key=cron_unique_key(name, tick), run_at=tick)


async def _running(store: Store, queue: str) -> int:
    return (await store.count_jobs(queue=queue)).get(JobState.RUNNING, 0)


async def _stats(store: Store, now: datetime) -> dict[str, QueueStats]:
    return {q.name: q for q in await store.list_queues(now=now)}


class ClusterConformance:
    """The cluster rules of :class:`dispatch_core.store.Store`, as tests. Subclass (or
    subclass :class:`~dispatch_core.testing.StoreConformance`) and give ``store_factory``."""

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        raise NotImplementedError("a conformance subclass must define the store_factory fixture")

    # -- workers -----------------------------------------------------------------------------------

    def test_register_and_list_workers_round_trip(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            young = _worker(
                now=t0 + _s(7),
                started_at=t0 + _s(5),
                queues=("emails", "default"),
                hostname="host-b",
                pid=2,
                concurrency=3,
            )
            old = _worker(
                now=t0 + _s(1), started_at=t0, queues=None, pid=1, concurrency=50, names=None
            )
            gone = _worker(now=t0 + _s(9), started_at=t0 + _s(8), state=WorkerState.STOPPED)
            assert await store.list_workers() == []
            for w in (young, gone, old):
                await store.register_worker(w)
            got = await store.list_workers()
            assert [w.id for w in got] == [old.id, young.id, gone.id]  # oldest started_at first
            for g, want in zip(got, (old, young, gone), strict=True):
                _assert_worker(g, want)
            # registering again replaces the row
            moved = attrs.evolve(
                young,
                hostname="host-c",
                pid=3,
                queues=("x",),
                names=("a.b", "mail.send", "__main__.x" * 30),
                last_seen=t0 + _s(20),
            )
            await store.register_worker(moved)
            _assert_worker((await _workers(store))[young.id], moved)
            assert len(await store.list_workers()) == 3

        _run(store_factory, body)

    def test_heartbeat_refreshes_and_revives_the_worker_row(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            w = _worker(now=t0)
            await store.register_worker(w)
            await store.enqueue([make_new_job(), make_new_job()])
            a, b = await _claim(store, limit=2, worker_id=w.id, now=t0, lease_seconds=10)
            assert a.attempt_token is not None
            assert b.attempt_token is not None
            await store.cancel(b.id, now=t0 + _s(1))
            lost = await store.heartbeat(
                worker_id=w.id,
                leases={a.id: a.attempt_token, b.id: b.attempt_token},
                lease_seconds=10,
                now=t0 + _s(5),
                worker=w,
            )
            assert lost == {b.id}  # the lost lease is still reported with a worker row
            row = (await _workers(store))[w.id]
            assert _near(row.last_seen, t0 + _s(5))
            assert row.state is WorkerState.RUNNING
            assert _near((await store.get_job(a.id)).lease_expires_at, t0 + _s(15))

            # the leader declares it dead (and rescues its job), then a late heartbeat revives it
            rescued = await store.rescue_expired(now=t0 + _s(40), worker_timeout=30)
            assert [j.id for j in rescued] == [a.id]
            assert (await _workers(store))[w.id].state is WorkerState.DEAD
            lost = await store.heartbeat(
                worker_id=w.id,
                leases={a.id: a.attempt_token},
                lease_seconds=10,
                now=t0 + _s(41),
                worker=w,
            )
            assert lost == {a.id}  # its rescued job stays lost to it
            row = (await _workers(store))[w.id]
            assert row.state is WorkerState.RUNNING
            assert _near(row.last_seen, t0 + _s(41))

            # a heartbeat from an unregistered worker inserts its row
            fresh = _worker(now=t0, hostname="host-z", queues=None)
            assert (
                await store.heartbeat(
                    worker_id=fresh.id, leases={}, lease_seconds=10, now=t0 + _s(50), worker=fresh
                )
                == set()
            )
            _assert_worker(
                (await _workers(store))[fresh.id], attrs.evolve(fresh, last_seen=t0 + _s(50))
            )
            # and one without ``worker`` leaves the rows alone
            await store.heartbeat(worker_id=w.id, leases={}, lease_seconds=10, now=t0 + _s(60))
            assert _near((await _workers(store))[w.id].last_seen, t0 + _s(41))

        _run(store_factory, body)

    def test_deregister_marks_stopped_and_gives_up_leadership(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            a, b = _worker(now=t0), _worker(now=t0, started_at=t0 + _s(1))
            await store.register_worker(a)
            await store.register_worker(b)
            assert await store.acquire_leadership(worker_id=a.id, ttl=60, now=t0)
            await store.deregister_worker(a.id, now=t0 + _s(3))
            row = (await _workers(store))[a.id]
            assert row.state is WorkerState.STOPPED
            assert _near(row.last_seen, t0 + _s(3))
            assert row.leader is False
            assert await store.get_leader(now=t0 + _s(4)) is None
            assert await store.acquire_leadership(worker_id=b.id, ttl=60, now=t0 + _s(4))
            # a stopped non-leader leaves the lease alone; unknown ids are ignored
            c = _worker(now=t0, started_at=t0 + _s(2))
            await store.register_worker(c)
            await store.deregister_worker(c.id, now=t0 + _s(5))
            assert await store.get_leader(now=t0 + _s(6)) == b.id
            await store.deregister_worker("wkr_01h455vb4pex5vsknk084sn02q", now=t0 + _s(5))
            assert len(await store.list_workers()) == 3

        _run(store_factory, body)

    def test_list_workers_marks_the_leader(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            a, b = _worker(now=t0), _worker(now=t0, started_at=t0 + _s(1))
            await store.register_worker(a)
            await store.register_worker(b)
            assert [w.leader for w in await store.list_workers()] == [False, False]
            assert await store.acquire_leadership(worker_id=b.id, ttl=5, now=t0)
            assert [(w.id, w.leader) for w in await store.list_workers()] == [
                (a.id, False),
                (b.id, True),
            ]
            # still marked once expired: the reader compares times
            assert await store.get_leader(now=t0 + _s(10)) is None
            assert (await _workers(store))[b.id].leader is True
            assert await store.acquire_leadership(worker_id=a.id, ttl=5, now=t0 + _s(10))
            assert [(w.id, w.leader) for w in await store.list_workers()] == [
                (a.id, True),
                (b.id, False),
            ]

        _run(store_factory, body)

    # -- the leader lease --------------------------------------------------------------------------

    def test_leader_lease_is_exclusive_until_it_expires(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            assert await store.get_leader(now=t0) is None
            assert await store.acquire_leadership(worker_id="wkr_a", ttl=10, now=t0)
            assert await store.get_leader(now=t0 + _s(1)) == "wkr_a"
            assert not await store.acquire_leadership(worker_id="wkr_b", ttl=10, now=t0 + _s(5))
            assert await store.get_leader(now=t0 + _s(5)) == "wkr_a"
            # the holder renews: its lease now runs to t0 + 18
            assert await store.acquire_leadership(worker_id="wkr_a", ttl=10, now=t0 + _s(8))
            assert not await store.acquire_leadership(worker_id="wkr_b", ttl=10, now=t0 + _s(12))
            assert await store.get_leader(now=t0 + _s(17)) == "wkr_a"
            assert await store.get_leader(now=t0 + _s(18.5)) is None
            # expired (expires_at <= now): another worker takes it
            assert await store.acquire_leadership(worker_id="wkr_b", ttl=10, now=t0 + _s(18))
            assert await store.get_leader(now=t0 + _s(19)) == "wkr_b"
            assert not await store.acquire_leadership(worker_id="wkr_a", ttl=10, now=t0 + _s(19))
            # another instance on the same database sees the same lease
            other = store_factory()
            await other.open()
            try:
                assert await other.get_leader(now=t0 + _s(20)) == "wkr_b"
                assert not await other.acquire_leadership(
                    worker_id="wkr_c", ttl=10, now=t0 + _s(20)
                )
            finally:
                await other.close()

        _run(store_factory, body)

    def test_release_leadership(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            await store.release_leadership("wkr_a")  # nobody holds it: nothing happens
            assert await store.acquire_leadership(worker_id="wkr_a", ttl=60, now=t0)
            await store.release_leadership("wkr_b")  # not the holder: nothing happens
            assert await store.get_leader(now=t0 + _s(1)) == "wkr_a"
            assert not await store.acquire_leadership(worker_id="wkr_b", ttl=60, now=t0 + _s(1))
            await store.release_leadership("wkr_a")
            assert await store.get_leader(now=t0 + _s(1)) is None
            assert await store.acquire_leadership(worker_id="wkr_b", ttl=60, now=t0 + _s(1))
            assert await store.get_leader(now=t0 + _s(2)) == "wkr_b"

        _run(store_factory, body)

    def test_leader_race_has_one_leader_at_a_time(self, store_factory: StoreFactory) -> None:
        """Eight contenders, each with its own store instance, event loop and thread, try to
        take the lease every 20 ms for two seconds; a holder goes quiet now and then so that the
        lease changes hands. The leases granted to different workers never overlap."""
        ttl, period, duration, contenders = 0.3, 0.02, 2.0, 8
        _run(store_factory, _migrated)
        granted: list[tuple[datetime, datetime, str]] = []
        errors: list[BaseException] = []
        record = threading.Lock()
        start = threading.Barrier(contenders)

        async def contend(worker_id: str) -> None:
            store = store_factory()
            await store.open()
            try:
                start.wait(timeout=30)
                deadline = time.monotonic() + duration
                streak = 0
                while time.monotonic() < deadline:
                    now = utcnow()
                    if await store.acquire_leadership(worker_id=worker_id, ttl=ttl, now=now):
                        with record:
                            granted.append((now, now + _s(ttl), worker_id))
                        streak += 1
                        if streak >= 6:  # step down by going quiet past the lease
                            streak = 0
                            await asyncio.sleep(ttl + 0.1)
                            continue
                    else:
                        streak = 0
                    await asyncio.sleep(period)
            finally:
                await store.close()

        def thread_main(worker_id: str) -> None:
            try:
                asyncio.run(contend(worker_id))
            except BaseException as exc:
                start.abort()  # release the others from the barrier
                errors.append(exc)

        threads = [
            threading.Thread(target=thread_main, args=(f"wkr_race_{i}",), daemon=True)
            for i in range(contenders)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=duration + 30)
        assert not any(t.is_alive() for t in threads), "a contender hung"
        if errors:
            raise errors[0]

        granted.sort()
        assert granted, "nobody became leader"
        holder, until, handovers = granted[0][2], granted[0][1], 0
        for begin, end, worker_id in granted[1:]:
            if worker_id == holder:
                until = max(until, end)
                continue
            assert begin >= until, (
                f"{worker_id} got the lease at {begin} while {holder} held it until {until}"
            )
            holder, until, handovers = worker_id, end, handovers + 1
        assert handovers >= 1, "the lease never changed hands"
        assert len({w for _, _, w in granted}) >= 2

    # -- rescue by dead worker ---------------------------------------------------------------------

    def test_rescue_jobs_of_a_silent_worker(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            silent, live = _worker(now=t0), _worker(now=t0 + _s(20))
            await store.register_worker(silent)
            await store.register_worker(live)
            await store.enqueue([make_new_job(queue=q) for q in ("q1", "q2", "q3")])
            (lost_job,) = await _claim(store, queues=["q1"], worker_id=silent.id, now=t0)
            (kept,) = await _claim(store, queues=["q2"], worker_id=live.id, now=t0)
            # a worker without a row is judged by its lease only
            (unregistered,) = await _claim(store, queues=["q3"], worker_id="wkr_norow", now=t0)
            later = t0 + _s(LEASE - 1)  # every lease still valid; the silent worker is 29 s quiet
            rescued = await store.rescue_expired(now=later, worker_timeout=20)
            assert [j.id for j in rescued] == [lost_job.id]
            (job,) = rescued
            assert job.state is JobState.RETRYING
            assert job.attempt == 1
            assert job.attempt_token is None
            # a crash reads as a crash, in the job and in its dead-letter entry alike
            assert job.last_error == (
                f"worker {silent.id} died: it sent no heartbeat within the worker timeout"
            )
            stored = await store.get_job(lost_job.id)
            assert stored.state is JobState.RETRYING
            assert stored.attempt_token is None
            rows = await _workers(store)
            assert rows[silent.id].state is WorkerState.DEAD
            assert _near(rows[silent.id].last_seen, t0)  # marking dead is no heartbeat
            assert rows[live.id].state is WorkerState.RUNNING
            assert (await store.get_job(kept.id)).state is JobState.RUNNING
            assert (await store.get_job(unregistered.id)).state is JobState.RUNNING
            # the silent worker's late write is fenced out, and the job runs again
            assert not await _finish(store, lost_job, now=later)
            (again,) = await _claim(store, queues=["q1"], worker_id=live.id, now=later)
            assert again.id == lost_job.id
            assert again.attempt == 2
            # a dead worker stays dead: nothing more to rescue
            assert await store.rescue_expired(now=later, worker_timeout=20) == []

        _run(store_factory, body)

    def test_rescue_jobs_of_a_stopped_worker(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            w = _worker(now=t0)
            await store.register_worker(w)
            await store.enqueue([make_new_job()])
            (job,) = await _claim(store, worker_id=w.id, now=t0)
            await store.deregister_worker(w.id, now=t0 + _s(1))  # exited with the job running
            # without worker_timeout, only expired leases count
            assert await store.rescue_expired(now=t0 + _s(2)) == []
            rescued = await store.rescue_expired(now=t0 + _s(2), worker_timeout=60)
            assert [j.id for j in rescued] == [job.id]
            assert rescued[0].state is JobState.RETRYING
            assert rescued[0].last_error == (
                f"worker {w.id} stopped or restarted without finishing the job"
            )
            assert (await _workers(store))[w.id].state is WorkerState.STOPPED

        _run(store_factory, body)

    def test_rescue_without_worker_timeout_only_takes_expired_leases(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            silent = _worker(now=t0)
            await store.register_worker(silent)
            await store.enqueue([make_new_job(queue="long"), make_new_job(queue="short")])
            (long_job,) = await _claim(
                store, queues=["long"], worker_id=silent.id, now=t0, lease_seconds=600
            )
            (short_job,) = await _claim(
                store, queues=["short"], worker_id=silent.id, now=t0, lease_seconds=5
            )
            rescued = await store.rescue_expired(now=t0 + _s(300))
            assert [j.id for j in rescued] == [short_job.id]
            assert (await store.get_job(long_job.id)).state is JobState.RUNNING
            assert (await _workers(store))[silent.id].state is WorkerState.RUNNING

        _run(store_factory, body)

    def test_rescue_of_a_dead_worker_job_without_attempts_dead_letters_it(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            w = _worker(now=t0)
            await store.register_worker(w)
            await store.enqueue([make_new_job(max_attempts=1)])
            (job,) = await _claim(store, worker_id=w.id, now=t0)
            (rescued,) = await store.rescue_expired(now=t0 + _s(15), worker_timeout=10)
            assert rescued.id == job.id
            assert rescued.state is JobState.FAILED
            assert (await store.get_job(job.id)).state is JobState.FAILED
            (entry,) = await store.list_dlq(DLQFilter())
            assert entry.job_id == job.id
            assert entry.attempts == 1
            assert entry.error == (
                f"worker {w.id} died: it sent no heartbeat within the worker timeout"
            )
            assert not await _finish(store, job, now=t0 + _s(16))

        _run(store_factory, body)

    # -- cron --------------------------------------------------------------------------------------

    def test_cron_upsert_list_and_get(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            report = _entry(
                "b-report",
                now=t0,
                payload={"k": [1, "x"]},
                queue="reports",
                misfire=MisfirePolicy.SKIP,
                misfire_grace=30.5,
            )
            cleanup = _entry("a-cleanup", now=t0, expr="0 3 * * *", timezone="Europe/Paris")
            assert await store.list_cron() == []
            await store.upsert_cron([report, cleanup], now=t0)
            listed = await store.list_cron()
            assert [e.name for e in listed] == ["a-cleanup", "b-report"]
            _assert_entry(listed[0], cleanup)
            _assert_entry(listed[1], report)
            _assert_entry(await store.get_cron("b-report"), report)
            with pytest.raises(CronNotFoundError):
                await store.get_cron("nope")

        _run(store_factory, body)

    def test_cron_reregistration_keeps_the_runtime_state(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            first = _entry("nightly", now=t0, expr="0 3 * * *", payload={"v": 1}, queue="q1")
            await store.upsert_cron([first], now=t0)
            tick1 = first.next_run_at
            tick2 = first.schedule().next_after(tick1)
            fired = await store.fire_cron(
                name="nightly",
                tick=tick1,
                next_run_at=tick2,
                job=_cron_job("nightly", tick1),
                now=tick1 + _s(1),
            )
            assert fired is not None
            t1 = t0 + _s(3600)
            disabled = await store.set_cron_enabled(
                "nightly", enabled=False, next_run_at=tick2 + timedelta(days=7), now=t1
            )
            assert disabled.enabled is False
            assert _near(disabled.next_run_at, tick2)  # disabling leaves next_run_at
            assert _near(disabled.updated_at, t1)
            # same schedule again, with another job, payload, queue and policy
            t2 = t1 + _s(3600)
            same = _entry(
                "nightly",
                now=t2 + timedelta(days=3),  # a different next_run_at, which must be ignored
                expr="0 3 * * *",
                job_name="conformance.other",
                payload={"v": 2},
                queue="q2",
                misfire=MisfirePolicy.SKIP,
                misfire_grace=5.0,
            )
            assert same.next_run_at != tick2
            await store.upsert_cron([same], now=t2)
            want = attrs.evolve(
                same,
                enabled=False,
                next_run_at=tick2,
                last_run_at=tick1 + _s(1),
                last_job_id=fired.id,
                created_at=t0,
                updated_at=t2,
            )
            _assert_entry(await store.get_cron("nightly"), want)
            # a changed expression takes the new next_run_at
            t3 = t2 + _s(60)
            changed = _entry("nightly", now=t2, expr="30 4 * * *")
            await store.upsert_cron([changed], now=t3)
            want = attrs.evolve(
                changed,
                enabled=False,
                last_run_at=tick1 + _s(1),
                last_job_id=fired.id,
                created_at=t0,
                updated_at=t3,
            )
            _assert_entry(await store.get_cron("nightly"), want)
            # so does a changed timezone
            moved = _entry("nightly", now=t2, expr="30 4 * * *", timezone="America/New_York")
            assert moved.next_run_at != changed.next_run_at
            await store.upsert_cron([moved], now=t3)
            got = await store.get_cron("nightly")
            assert got.timezone == "America/New_York"
            assert _near(got.next_run_at, moved.next_run_at)
            assert got.enabled is False
            # enabling sets next_run_at
            t4 = t3 + _s(60)
            nxt = moved.schedule().next_after(t4)
            enabled = await store.set_cron_enabled("nightly", enabled=True, next_run_at=nxt, now=t4)
            assert enabled.enabled is True
            assert _near(enabled.next_run_at, nxt)
            _assert_entry(await store.get_cron("nightly"), enabled)
            assert _near(enabled.updated_at, t4)
            with pytest.raises(CronNotFoundError):
                await store.set_cron_enabled("nope", enabled=True, next_run_at=nxt, now=t4)

        _run(store_factory, body)

    def test_fire_cron_fires_each_tick_once(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            entry = _entry("report", now=t0)
            await store.upsert_cron([entry], now=t0)
            sched = entry.schedule()
            tick1 = entry.next_run_at
            tick2 = sched.next_after(tick1)
            tick3 = sched.next_after(tick2)
            new = _cron_job("report", tick1)
            job = await store.fire_cron(
                name="report", tick=tick1, next_run_at=tick2, job=new, now=tick1 + _s(0.5)
            )
            assert job is not None
            assert job.id == new.id
            assert job.unique_key == cron_unique_key("report", tick1)
            assert job.state is JobState.PENDING
            assert job.name == _CRON_JOB
            got = await store.get_cron("report")
            assert _near(got.next_run_at, tick2)
            assert _near(got.last_run_at, tick1 + _s(0.5))
            assert got.last_job_id == job.id
            # the same tick again (a second leader, a retry): nothing
            again = await store.fire_cron(
                name="report",
                tick=tick1,
                next_run_at=tick2,
                job=_cron_job("report", tick1),
                now=tick1 + _s(1),
            )
            assert again is None
            assert [j.id for j in await store.list_jobs(JobFilter())] == [job.id]
            # a skipped tick advances the schedule and writes nothing else
            skipped = await store.fire_cron(
                name="report", tick=tick2, next_run_at=tick3, job=None, now=tick2 + _s(1)
            )
            assert skipped is None
            got = await store.get_cron("report")
            assert _near(got.next_run_at, tick3)
            assert _near(got.last_run_at, tick1 + _s(0.5))
            assert got.last_job_id == job.id
            assert len(await store.list_jobs(JobFilter())) == 1
            # a tick that is not next_run_at any more fires nothing
            assert (
                await store.fire_cron(
                    name="report",
                    tick=tick2,
                    next_run_at=tick3,
                    job=_cron_job("report", tick2),
                    now=tick2 + _s(2),
                )
                is None
            )
            # a disabled entry fires nothing
            await store.set_cron_enabled(
                "report", enabled=False, next_run_at=tick3, now=tick2 + _s(3)
            )
            assert (
                await store.fire_cron(
                    name="report",
                    tick=tick3,
                    next_run_at=sched.next_after(tick3),
                    job=_cron_job("report", tick3),
                    now=tick3,
                )
                is None
            )
            assert _near((await store.get_cron("report")).next_run_at, tick3)
            # an unknown entry fires nothing
            assert (
                await store.fire_cron(
                    name="nope",
                    tick=tick3,
                    next_run_at=tick3 + _s(60),
                    job=_cron_job("nope", tick3),
                    now=tick3,
                )
                is None
            )
            assert len(await store.list_jobs(JobFilter())) == 1

        _run(store_factory, body)

    def test_fire_cron_returns_the_job_that_already_has_the_key(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            entry = _entry("sync", now=t0)
            await store.upsert_cron([entry], now=t0)
            tick = entry.next_run_at
            (existing,) = await store.enqueue([_cron_job("sync", tick)])
            fired = await store.fire_cron(
                name="sync",
                tick=tick,
                next_run_at=entry.schedule().next_after(tick),
                job=_cron_job("sync", tick),
                now=tick,
            )
            assert fired is not None
            assert fired.id == existing.id
            got = await store.get_cron("sync")
            assert got.last_job_id == existing.id
            assert _near(got.next_run_at, entry.schedule().next_after(tick))
            assert len(await store.list_jobs(JobFilter())) == 1

        _run(store_factory, body)

    def test_concurrent_fires_of_one_tick_write_one_job(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            entry = _entry("often", now=t0, expr="* * * * * *")  # every second
            await store.upsert_cron([entry], now=t0)
            sched = entry.schedule()
            others = [store_factory() for _ in range(3)]
            for other in others:
                await other.open()
            try:
                tick = entry.next_run_at
                for _ in range(5):
                    nxt = sched.next_after(tick)
                    results = await asyncio.gather(
                        *(
                            s.fire_cron(
                                name="often",
                                tick=tick,
                                next_run_at=nxt,
                                job=_cron_job("often", tick),
                                now=tick,
                            )
                            for s in (store, *others)
                            for _ in range(2)
                        )
                    )
                    winners = [r for r in results if r is not None]
                    assert len(winners) == 1, results
                    assert winners[0].unique_key == cron_unique_key("often", tick)
                    tick = nxt
            finally:
                for other in others:
                    await other.close()
            assert len(await store.list_jobs(JobFilter())) == 5
            assert _near((await store.get_cron("often")).next_run_at, tick)

        _run(store_factory, body)

    def test_delete_cron(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            await store.upsert_cron([_entry("gone", now=t0), _entry("stays", now=t0)], now=t0)
            assert await store.delete_cron("gone") is True
            assert await store.delete_cron("gone") is False
            with pytest.raises(CronNotFoundError):
                await store.get_cron("gone")
            assert [e.name for e in await store.list_cron()] == ["stays"]

        _run(store_factory, body)

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


async def _migrated(store: Store) -> None:
    """Nothing: :func:`_run` has opened and migrated the store."""
