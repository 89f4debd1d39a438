"""The conformance suite on workflow events: ``send_event`` waking a waiting run, and
``take_event`` handing each event to one taker. Part of
:class:`~dispatch_core.testing.WorkflowConformance`, under the same rules."""

from __future__ import annotations

import asyncio

import pytest

from dispatch_core.errors import JobNotFoundError, RunNotFoundError
from dispatch_core.models import JobFilter
from dispatch_core.states import JobState
from dispatch_core.store import Store
from dispatch_core.testing._helpers import (
    StoreFactory,
    _claim,
    _near,
    _run,
    _s,
    _t0,
)
from dispatch_core.testing._workflow_helpers import (
    _DRIVER,
    _RICH,
    _assert_event,
    _driver,
    _event,
    _jobs_with_key,
    _key,
    _park_waiting,
    _same_run,
    _start,
)
from dispatch_core.workflows.models import (
    RunState,
)

__all__ = ["EventConformance"]


class EventConformance:
    """The event rules of :class:`dispatch_core.store.Store`, as tests."""

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        raise NotImplementedError("a conformance subclass must define the store_factory fixture")

    # -- send_event ------------------------------------------------------------------------------

    def test_send_event_wakes_a_waiting_run_through_its_timer(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            run = await _start(store, now=t0)
            timeout_at = t0 + _s(3600)
            parked = await _park_waiting(store, run, "paid", now=t0 + _s(1), timeout_at=timeout_at)
            (timer,) = await _jobs_with_key(store, _key(run.id, 1))
            assert _near(timer.run_at, timeout_at)
            sent_at = t0 + _s(10)
            spare = _driver(run.id, run_at=sent_at)
            ev = _event(run.id, "paid", now=sent_at, payload=_RICH)
            assert await store.send_event(ev, driver=spare, now=sent_at) is True
            got = await store.get_run(run.id)
            assert got.state is RunState.RUNNING
            assert got.generation == parked.generation
            # the timer job is made due now, and no second wake-up job is written
            moved = await store.get_job(timer.id)
            assert moved.state is JobState.PENDING
            assert _near(moved.run_at, sent_at)
            assert [j.id for j in await _jobs_with_key(store, _key(run.id, 1))] == [timer.id]
            assert len(await store.list_jobs(JobFilter())) == 2  # the first driver, the timer
            claimed = await _claim(store, names=[_DRIVER], now=sent_at)
            assert timer.id in [j.id for j in claimed]
            # the event is there for the replay to take
            _assert_event(await store.take_event(run.id, "paid", seq=1, now=sent_at), ev, 1)

        _run(store_factory, body)

    def test_send_event_inserts_the_driver_when_there_is_no_timer(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            run = await _start(store, now=t0, tenant="acme")
            await _park_waiting(store, run, "approved", now=t0 + _s(1))
            assert await _jobs_with_key(store, _key(run.id, 1)) == []
            sent_at = t0 + _s(20)
            driver = _driver(run.id, run_at=sent_at, tenant="acme")
            ev = _event(run.id, "approved", now=sent_at, tenant="acme")
            assert await store.send_event(ev, driver=driver, now=sent_at) is True
            assert (await store.get_run(run.id)).state is RunState.RUNNING
            job = await store.get_job(driver.id)
            assert job.state is JobState.PENDING
            assert job.unique_key == _key(run.id, 1)
            assert job.payload == {"run_id": run.id}
            claimed = await _claim(store, names=[_DRIVER], now=sent_at)
            assert driver.id in [j.id for j in claimed]

        _run(store_factory, body)

    def test_send_event_does_not_wake_a_run_that_waits_for_something_else(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            waiting = await _start(store, now=t0)
            sleeping = await _start(store, now=t0)
            w = await _park_waiting(store, waiting, "paid", now=t0, timeout_at=t0 + _s(600))
            timer = _driver(sleeping.id, run_at=t0 + _s(900), unique_key=_key(sleeping.id, 1))
            s = await store.update_run(
                sleeping.id,
                state=RunState.SLEEPING,
                now=t0,
                generation=0,
                wake_at=t0 + _s(900),
                driver=timer,
            )
            assert s is not None
            jobs_before = len(await store.list_jobs(JobFilter()))
            for run, name in ((waiting, "shipped"), (sleeping, "paid"), (sleeping, "shipped")):
                ev = _event(run.id, name, now=t0 + _s(5))
                spare = _driver(run.id, run_at=t0 + _s(5))
                assert await store.send_event(ev, driver=spare, now=t0 + _s(5)) is False
                with pytest.raises(JobNotFoundError):
                    await store.get_job(spare.id)
            assert _same_run(await store.get_run(waiting.id), w)
            assert _same_run(await store.get_run(sleeping.id), s)
            assert len(await store.list_jobs(JobFilter())) == jobs_before
            (w_timer,) = await _jobs_with_key(store, _key(waiting.id, 1))
            assert _near(w_timer.run_at, t0 + _s(600))
            assert _near((await store.get_job(timer.id)).run_at, t0 + _s(900))
            # the events were stored all the same
            got = await store.take_event(sleeping.id, "paid", seq=2, now=t0 + _s(6))
            assert got is not None
            assert got.name == "paid"

        _run(store_factory, body)

    def test_send_event_to_another_tenant_or_unknown_run_raises(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            acme = await _start(store, now=t0, tenant="acme")
            untenanted = await _start(store, now=t0)
            await _park_waiting(store, acme, "paid", now=t0)
            await _park_waiting(store, untenanted, "paid", now=t0)
            for run_id, tenant in (
                (acme.id, "globex"),
                (acme.id, None),
                (untenanted.id, "acme"),
                ("run_01h455vb4pex5vsknk084sn02q", None),
                ("run_01h455vb4pex5vsknk084sn02q", "acme"),
            ):
                ev = _event(run_id, "paid", now=t0 + _s(1), tenant=tenant)
                spare = _driver(run_id, run_at=t0 + _s(1))
                with pytest.raises(RunNotFoundError):
                    await store.send_event(ev, driver=spare, now=t0 + _s(1))
            # nothing was stored or woken
            for run in (acme, untenanted):
                got = await store.get_run(run.id)
                assert got.state is RunState.WAITING
                assert await store.take_event(run.id, "paid", seq=1, now=t0 + _s(2)) is None
            assert len(await store.list_jobs(JobFilter())) == 2
            # the right tenant reaches its run
            ev = _event(acme.id, "paid", now=t0 + _s(3), tenant="acme")
            assert await store.send_event(ev, driver=_driver(acme.id, run_at=t0), now=t0) is True

        _run(store_factory, body)

    def test_concurrent_events_wake_a_run_once(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            others = [store_factory() for _ in range(2)]
            for other in others:
                await other.open()
            senders = [store, *others]
            try:
                for round_ in range(4):
                    run = await _start(store, now=t0)
                    with_timer = round_ % 2 == 1
                    timeout_at = t0 + _s(600) if with_timer else None
                    await _park_waiting(store, run, "paid", now=t0, timeout_at=timeout_at)
                    events = [
                        _event(run.id, "paid", now=t0 + _s(1), payload={"i": i})
                        for i in range(2 * len(senders))
                    ]
                    drivers = [_driver(run.id, run_at=t0 + _s(1)) for _ in events]
                    results = await asyncio.gather(
                        *(
                            senders[i % len(senders)].send_event(ev, driver=d, now=t0 + _s(1))
                            for i, (ev, d) in enumerate(zip(events, drivers, strict=True))
                        )
                    )
                    assert sorted(results) == [False] * (len(events) - 1) + [True], results
                    (wake,) = await _jobs_with_key(store, _key(run.id, 1))
                    assert _near(wake.run_at, t0 + _s(1))
                    assert (await store.get_run(run.id)).state is RunState.RUNNING
                    # every event was stored, and each is taken once
                    taken = [
                        await store.take_event(run.id, "paid", seq=10 + i, now=t0 + _s(2))
                        for i in range(len(events) + 1)
                    ]
                    assert taken[-1] is None
                    assert sorted(e.id for e in taken if e is not None) == sorted(
                        e.id for e in events
                    )
            finally:
                for other in others:
                    await other.close()

        _run(store_factory, body)

    # -- take_event ------------------------------------------------------------------------------

    def test_take_event_consumes_oldest_first_and_replays(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            run = await _start(store, now=t0, tenant="acme")
            other = await _start(store, now=t0, tenant="acme")
            assert await store.take_event(run.id, "paid", seq=3, now=t0) is None
            sent = [
                _event(run.id, name, now=t0 + _s(i), payload={"i": i, "rich": _RICH}, tenant="acme")
                for i, name in enumerate(("paid", "shipped", "paid"), start=1)
            ]
            await store.send_event(
                _event(other.id, "paid", now=t0, tenant="acme"),
                driver=_driver(other.id, run_at=t0),
                now=t0,
            )
            for ev in sent:
                await store.send_event(ev, driver=_driver(run.id, run_at=t0), now=ev.created_at)
            first, shipped, second = sent
            _assert_event(await store.take_event(run.id, "paid", seq=3, now=t0 + _s(5)), first, 3)
            # a replay of the same wait gets the same event back
            _assert_event(await store.take_event(run.id, "paid", seq=3, now=t0 + _s(6)), first, 3)
            _assert_event(await store.take_event(run.id, "paid", seq=5, now=t0 + _s(7)), second, 5)
            assert await store.take_event(run.id, "paid", seq=6, now=t0 + _s(8)) is None
            _assert_event(await store.take_event(run.id, "paid", seq=3, now=t0 + _s(9)), first, 3)
            _assert_event(await store.take_event(run.id, "paid", seq=5, now=t0 + _s(9)), second, 5)
            _assert_event(
                await store.take_event(run.id, "shipped", seq=6, now=t0 + _s(9)), shipped, 6
            )
            assert await store.take_event(run.id, "refunded", seq=7, now=t0 + _s(9)) is None
            # another run's events are its own
            got = await store.take_event(other.id, "paid", seq=3, now=t0 + _s(9))
            assert got is not None
            assert got.run_id == other.id
            assert (
                await store.take_event("run_01h455vb4pex5vsknk084sn02q", "paid", seq=1, now=t0)
                is None
            )

        _run(store_factory, body)

    def test_concurrent_takers_get_an_event_once(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            others = [store_factory() for _ in range(2)]
            for other in others:
                await other.open()
            takers = [store, *others]
            try:
                run = await _start(store, now=t0)
                for round_ in range(5):
                    ev = _event(run.id, f"tick-{round_}", now=t0 + _s(round_))
                    await store.send_event(ev, driver=_driver(run.id, run_at=t0), now=t0)
                    base = 100 * (round_ + 1)
                    results = await asyncio.gather(
                        *(
                            s.take_event(run.id, ev.name, seq=base + i, now=t0 + _s(round_))
                            for i, s in enumerate(t for t in takers for _ in range(2))
                        )
                    )
                    winners = [r for r in results if r is not None]
                    assert len(winners) == 1, results
                    assert winners[0].id == ev.id
                    seq = winners[0].consumed_seq
                    assert seq is not None
                    assert base <= seq < base + 2 * len(takers)
                    # the winner's replay still gets it; nobody else does
                    again = await store.take_event(run.id, ev.name, seq=seq, now=t0)
                    assert again is not None
                    assert again.id == ev.id
                    assert await store.take_event(run.id, ev.name, seq=base + 99, now=t0) is None
            finally:
                for other in others:
                    await other.close()

        _run(store_factory, body)
