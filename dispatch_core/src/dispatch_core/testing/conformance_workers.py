"""The conformance suite on worker rows, the leader lease and the rescue of a dead worker's
jobs: part of :class:`~dispatch_core.testing.ClusterConformance`, under the same rules."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime

import attrs
import pytest

from dispatch_core._ids import new_id
from dispatch_core.cluster import WorkerInfo, WorkerState
from dispatch_core.models import DLQFilter, utcnow
from dispatch_core.states import JobState
from dispatch_core.store import Store
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

__all__ = ["WorkerConformance"]


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


class WorkerConformance:
    """The worker, leader and rescue rules of :class:`dispatch_core.store.Store`, as tests."""

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


async def _migrated(store: Store) -> None:
    """Nothing: :func:`_run` has opened and migrated the store."""
