"""The conformance suite on cron entries: upsert, read, enable, fire once per tick, delete.
Part of :class:`~dispatch_core.testing.ClusterConformance`, under the same rules."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import attrs
import pytest

from dispatch_core.cron import CronEntry, CronSchedule, MisfirePolicy, cron_unique_key
from dispatch_core.errors import CronNotFoundError
from dispatch_core.models import JobFilter, NewJob
from dispatch_core.states import JobState
from dispatch_core.store import Store
from dispatch_core.testing._helpers import (
    StoreFactory,
    _near,
    _run,
    _s,
    _t0,
    make_new_job,
)

__all__ = ["CronConformance"]

_CRON_JOB = "conformance.cron"


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


class CronConformance:
    """The cron rules of :class:`dispatch_core.store.Store`, as tests."""

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        raise NotImplementedError("a conformance subclass must define the store_factory fixture")

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
