"""The conformance suite on workflow runs: create, read and list runs, their step history,
and ``update_run``'s conditional writes. Part of
:class:`~dispatch_core.testing.WorkflowConformance`, under the same rules."""

from __future__ import annotations

from typing import Any

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
    _assert_new_run,
    _assert_step,
    _driver,
    _event,
    _jobs_with_key,
    _key,
    _new_run,
    _park_waiting,
    _run_ids,
    _same_run,
    _start,
    _step,
)
from dispatch_core.workflows.models import (
    RunFilter,
    RunState,
    StepKind,
    StepState,
)

__all__ = ["RunConformance"]


class RunConformance:
    """The run and history rules of :class:`dispatch_core.store.Store`, as tests."""

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        raise NotImplementedError("a conformance subclass must define the store_factory fixture")

    # -- runs: create, read, list ----------------------------------------------------------------

    def test_create_run_round_trips_every_field(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            parent = _new_run(now=t0 - _s(60))
            parent_driver = _driver(parent.id, run_at=t0 - _s(60))
            await store.create_run(parent, parent_driver)
            new = _new_run(
                now=t0,
                name="conformance.order",
                version=3,
                input=_RICH,
                tenant="acme",
                parent_run_id=parent.id,
                correlation_key="order-42",
            )
            driver = _driver(new.id, run_at=t0, unique_key=_key(new.id, 0), tenant="acme")
            created = await store.create_run(new, driver)
            got = await store.get_run(new.id)
            for r in (created, got):
                _assert_new_run(r, new)
            # the first driver job was written with the run, and a worker can claim it
            job = await store.get_job(driver.id)
            assert job.state is JobState.PENDING
            assert (job.name, job.payload, job.unique_key, job.tenant) == (
                _DRIVER,
                {"run_id": new.id},
                _key(new.id, 0),
                "acme",
            )
            claimed = await _claim(store, names=[_DRIVER], now=t0 + _s(1))
            assert sorted(j.id for j in claimed) == sorted([parent_driver.id, driver.id])

        _run(store_factory, body)

    def test_create_run_with_a_taken_id_returns_the_stored_run(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            first = _new_run(now=t0, input={"n": 1})
            await store.create_run(first, _driver(first.id, run_at=t0))
            again = _new_run(now=t0 + _s(5), run_id=first.id, input={"n": 2}, name="other")
            second_driver = _driver(first.id, run_at=t0 + _s(5))
            got = await store.create_run(again, second_driver)
            _assert_new_run(got, first)  # the stored run, unchanged
            _assert_new_run(await store.get_run(first.id), first)
            with pytest.raises(JobNotFoundError):  # its driver was not written either
                await store.get_job(second_driver.id)

        _run(store_factory, body)

    def test_set_run_version_is_conditional_on_the_generation(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            new = _new_run(now=t0, version=1)
            await store.create_run(new, _driver(new.id, run_at=t0))
            assert await store.set_run_version(new.id, 2, generation=1, now=t0 + _s(1)) is None
            assert (await store.get_run(new.id)).version == 1
            moved = await store.set_run_version(new.id, 2, generation=0, now=t0 + _s(2))
            assert moved is not None
            assert moved.version == 2
            assert _near(moved.updated_at, t0 + _s(2))
            stored = await store.get_run(new.id)
            assert (stored.version, stored.generation, stored.state) == (2, 0, RunState.RUNNING)
            done = await store.update_run(new.id, state=RunState.COMPLETED, now=t0 + _s(3))
            assert done is not None
            assert await store.set_run_version(new.id, 3, generation=0, now=t0 + _s(4)) is None
            assert (await store.get_run(new.id)).version == 2
            with pytest.raises(RunNotFoundError):
                await store.set_run_version(
                    "run_01h455vb4pex5vsknk084sn02q", 2, generation=0, now=t0
                )

        _run(store_factory, body)

    def test_get_unknown_run_raises(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            with pytest.raises(RunNotFoundError):
                await store.get_run("run_01h455vb4pex5vsknk084sn02q")

        _run(store_factory, body)

    def test_list_runs_filters_newest_first(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            ids = _run_ids(5)
            specs: list[dict[str, Any]] = [
                {"name": "a", "tenant": "acme", "correlation_key": "order-1"},
                {"name": "b", "tenant": "acme", "parent_run_id": ids[0]},
                {"name": "a", "tenant": None, "correlation_key": "order-1"},
                {"name": "a", "tenant": "globex", "parent_run_id": ids[0]},
                {"name": "b", "tenant": None, "correlation_key": "order-2"},
            ]
            for i, (run_id, spec) in enumerate(zip(ids, specs, strict=True)):
                await _start(store, now=t0 + _s(i), run_id=run_id, **spec)
            done = await store.update_run(
                ids[2], state=RunState.COMPLETED, now=t0 + _s(10), output={"ok": True}
            )
            assert done is not None

            async def listed(**kw: Any) -> list[str]:
                return [r.id for r in await store.list_runs(RunFilter(**kw))]

            newest_first = ids[::-1]
            assert await listed() == newest_first
            assert await listed(state=RunState.COMPLETED) == [ids[2]]
            assert await listed(state=RunState.RUNNING) == [ids[4], ids[3], ids[1], ids[0]]
            assert await listed(name="a") == [ids[3], ids[2], ids[0]]
            assert await listed(tenant="acme") == [ids[1], ids[0]]
            assert await listed(parent_run_id=ids[0]) == [ids[3], ids[1]]
            assert await listed(correlation_key="order-1") == [ids[2], ids[0]]
            assert await listed(name="a", correlation_key="order-1", state=RunState.RUNNING) == [
                ids[0]
            ]
            assert await listed(name="nope") == []
            assert await listed(limit=2) == newest_first[:2]
            assert await listed(limit=2, offset=1) == newest_first[1:3]
            assert await listed(offset=4) == newest_first[4:]
            listed_runs = await store.list_runs(RunFilter(state=RunState.COMPLETED))
            assert listed_runs[0].output == {"ok": True}

        _run(store_factory, body)

    # -- history -----------------------------------------------------------------------------------

    def test_list_steps_orders_by_seq(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            run = await _start(store, now=t0)
            other = await _start(store, now=t0)
            steps = [
                _step(2, now=t0 + _s(2), output=[1, 2]),
                _step(0, now=t0, output=_RICH),
                _step(
                    1,
                    now=t0 + _s(1),
                    kind=StepKind.SLEEP,
                    state=StepState.PENDING,
                    wake_at=t0 + _s(600),
                ),
            ]
            for s in steps:
                await store.save_step(run.id, s, now=t0 + _s(3))
            await store.save_step(other.id, _step(0, now=t0, name="elsewhere"), now=t0)
            got = await store.list_steps(run.id)
            assert [s.seq for s in got] == [0, 1, 2]
            for g, want in zip(got, sorted(steps, key=lambda s: s.seq), strict=True):
                _assert_step(g, want)
            assert [s.name for s in await store.list_steps(other.id)] == ["elsewhere"]
            assert await store.list_steps("run_01h455vb4pex5vsknk084sn02q") == []

        _run(store_factory, body)

    def test_save_step_inserts_and_replaces_pending(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            run = await _start(store, now=t0)
            failed = _step(
                0, now=t0, kind=StepKind.STEP, state=StepState.FAILED, error="boom", attempts=3
            )
            _assert_step(await store.save_step(run.id, failed, now=t0), failed)
            pending = _step(
                1,
                now=t0,
                name="nap",
                kind=StepKind.SLEEP,
                state=StepState.PENDING,
                wake_at=t0 + _s(60),
            )
            _assert_step(await store.save_step(run.id, pending, now=t0), pending)
            # a pending record is replaced, by another pending one or by a finished one
            moved = _step(
                1,
                now=t0,
                name="nap",
                kind=StepKind.SLEEP,
                state=StepState.PENDING,
                wake_at=t0 + _s(90),
            )
            _assert_step(await store.save_step(run.id, moved, now=t0 + _s(1)), moved)
            woke = _step(
                1, now=t0, name="nap", kind=StepKind.SLEEP, output=None, wake_at=t0 + _s(90)
            )
            _assert_step(await store.save_step(run.id, woke, now=t0 + _s(90)), woke)
            got = await store.list_steps(run.id)
            assert len(got) == 2
            _assert_step(got[0], failed)
            _assert_step(got[1], woke)

        _run(store_factory, body)

    def test_save_step_never_overwrites_a_finished_record(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            run = await _start(store, now=t0)
            first = _step(0, now=t0, name="charge", output={"charge_id": "ch_1"})
            _assert_step(await store.save_step(run.id, first, now=t0), first)
            # a second driver replaying the run takes the first one's result
            for late in (
                _step(0, now=t0 + _s(5), name="charge", output={"charge_id": "ch_2"}),
                _step(0, now=t0 + _s(5), name="charge", state=StepState.FAILED, error="x"),
                _step(0, now=t0 + _s(5), name="charge", state=StepState.PENDING),
            ):
                _assert_step(await store.save_step(run.id, late, now=t0 + _s(5)), first)
            failed = _step(1, now=t0, name="ship", state=StepState.FAILED, error="no stock")
            await store.save_step(run.id, failed, now=t0)
            retry = _step(1, now=t0 + _s(9), name="ship", output={"ok": True})
            _assert_step(await store.save_step(run.id, retry, now=t0 + _s(9)), failed)
            got = await store.list_steps(run.id)
            _assert_step(got[0], first)
            _assert_step(got[1], failed)

        _run(store_factory, body)

    def test_save_step_for_an_unknown_run_raises(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            with pytest.raises(RunNotFoundError):
                await store.save_step("run_01h455vb4pex5vsknk084sn02q", _step(0, now=t0), now=t0)

        _run(store_factory, body)

    # -- update_run -------------------------------------------------------------------------------

    def test_update_run_parks_and_wakes(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            run = await _start(store, now=t0)
            wake = t0 + _s(3600)
            timer = _driver(run.id, run_at=wake, unique_key=_key(run.id, 1))
            slept = await store.update_run(
                run.id,
                state=RunState.SLEEPING,
                now=t0 + _s(1),
                expect=frozenset({RunState.RUNNING}),
                generation=0,
                wake_at=wake,
                driver=timer,
            )
            assert slept is not None
            got = await store.get_run(run.id)
            for r in (slept, got):
                assert r.state is RunState.SLEEPING
                assert r.generation == 1  # parking increments it
                assert _near(r.wake_at, wake)
                assert r.waiting_for is None
                assert _near(r.updated_at, t0 + _s(1))
                assert r.finished_at is None
                assert _near(r.created_at, t0)
            job = await store.get_job(timer.id)
            assert job.state is JobState.PENDING
            assert job.unique_key == _key(run.id, 1)
            assert _near(job.run_at, wake)
            # the timer fires: the run runs again, same generation, the park's fields cleared
            woke = await store.update_run(
                run.id,
                state=RunState.RUNNING,
                now=wake,
                expect=frozenset({RunState.SLEEPING}),
                generation=1,
            )
            assert woke is not None
            assert woke.state is RunState.RUNNING
            assert woke.generation == 1
            assert woke.wake_at is None
            assert _near(woke.updated_at, wake)
            # parking again, waiting this time, increments it again
            waited = await store.update_run(
                run.id,
                state=RunState.WAITING,
                now=wake + _s(1),
                generation=1,
                waiting_for="approved",
            )
            assert waited is not None
            assert (waited.state, waited.generation, waited.waiting_for) == (
                RunState.WAITING,
                2,
                "approved",
            )
            assert waited.wake_at is None
            assert _same_run(await store.get_run(run.id), waited)

        _run(store_factory, body)

    def test_update_run_conditions_write_nothing_when_unmet(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            run = await _start(store, now=t0)
            before = await store.get_run(run.id)
            late = _driver(run.id, run_at=t0, unique_key=_key(run.id, 1))
            # the state is not expected
            assert (
                await store.update_run(
                    run.id,
                    state=RunState.SLEEPING,
                    now=t0 + _s(1),
                    expect=frozenset({RunState.WAITING, RunState.SLEEPING}),
                    wake_at=t0 + _s(60),
                    driver=late,
                )
                is None
            )
            # the generation moved on
            assert (
                await store.update_run(
                    run.id,
                    state=RunState.SLEEPING,
                    now=t0 + _s(1),
                    generation=5,
                    wake_at=t0 + _s(60),
                    driver=late,
                )
                is None
            )
            assert _same_run(await store.get_run(run.id), before)
            with pytest.raises(JobNotFoundError):
                await store.get_job(late.id)
            assert await _jobs_with_key(store, _key(run.id, 1)) == []
            # met: written
            ok = await store.update_run(
                run.id,
                state=RunState.SLEEPING,
                now=t0 + _s(2),
                expect=frozenset({RunState.RUNNING}),
                generation=0,
                wake_at=t0 + _s(60),
                driver=late,
            )
            assert ok is not None
            assert ok.generation == 1
            assert (await store.get_job(late.id)).unique_key == _key(run.id, 1)
            # a second park from a stale view (generation 0) is refused
            assert (
                await store.update_run(
                    run.id,
                    state=RunState.WAITING,
                    now=t0 + _s(3),
                    generation=0,
                    waiting_for="x",
                )
                is None
            )
            assert _same_run(await store.get_run(run.id), ok)

        _run(store_factory, body)

    def test_update_run_to_a_terminal_state(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            done = await _start(store, now=t0)
            failed = await _start(store, now=t0)
            cancelled = await _start(store, now=t0)
            out = await store.update_run(
                done.id, state=RunState.COMPLETED, now=t0 + _s(5), output=_RICH
            )
            bad = await store.update_run(
                failed.id,
                state=RunState.FAILED,
                now=t0 + _s(6),
                expect=frozenset({RunState.RUNNING}),
                error="ValueError: no stock",
            )
            gone = await store.update_run(
                cancelled.id, state=RunState.CANCELLED, now=t0 + _s(7), error="cancelled"
            )
            assert out is not None
            assert bad is not None
            assert gone is not None
            for got, state, when in (
                (out, RunState.COMPLETED, t0 + _s(5)),
                (bad, RunState.FAILED, t0 + _s(6)),
                (gone, RunState.CANCELLED, t0 + _s(7)),
            ):
                stored = await store.get_run(got.id)
                for r in (got, stored):
                    assert r.state is state
                    assert _near(r.finished_at, when)
                    assert _near(r.updated_at, when)
                    assert r.generation == 0
                assert _same_run(stored, got)
            stored_out = await store.get_run(done.id)
            assert stored_out.output == _RICH
            assert stored_out.error is None
            stored_bad = await store.get_run(failed.id)
            assert stored_bad.error == "ValueError: no stock"
            assert stored_bad.output is None
            # a finished run never changes again (expect None means any non-terminal state)
            for r in (out, bad, gone):
                assert await store.update_run(r.id, state=RunState.RUNNING, now=t0 + _s(9)) is None
                assert (
                    await store.update_run(r.id, state=RunState.FAILED, now=t0 + _s(9), error="x")
                    is None
                )
                assert _same_run(await store.get_run(r.id), r)

        _run(store_factory, body)

    def test_update_run_driver_is_deduplicated_by_unique_key(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            run = await _start(store, now=t0)
            first = _driver(run.id, run_at=t0 + _s(30), unique_key=_key(run.id, 1))
            (existing,) = await store.enqueue([first])  # another process asked for it first
            again = _driver(run.id, run_at=t0 + _s(60), unique_key=_key(run.id, 1))
            parked = await store.update_run(
                run.id,
                state=RunState.SLEEPING,
                now=t0 + _s(1),
                generation=0,
                wake_at=t0 + _s(60),
                driver=again,
            )
            assert parked is not None
            assert [j.id for j in await _jobs_with_key(store, _key(run.id, 1))] == [existing.id]
            # a driver without a key is simply enqueued, with the write
            plain = _driver(run.id, run_at=t0 + _s(2))
            woke = await store.update_run(
                run.id, state=RunState.RUNNING, now=t0 + _s(2), generation=1, driver=plain
            )
            assert woke is not None
            assert (await store.get_job(plain.id)).state is JobState.PENDING
            assert len(await store.list_jobs(JobFilter())) == 3  # first driver, timer, plain

        _run(store_factory, body)

    def test_update_run_unknown_run_raises(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            with pytest.raises(RunNotFoundError):
                await store.update_run(
                    "run_01h455vb4pex5vsknk084sn02q", state=RunState.COMPLETED, now=_t0()
                )

        _run(store_factory, body)

    def test_parking_waiting_for_an_arrived_event_is_refused(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            run = await _start(store, now=t0)
            early = _event(run.id, "paid", now=t0 + _s(1))
            woken = await store.send_event(
                early, driver=_driver(run.id, run_at=t0 + _s(1)), now=t0 + _s(1)
            )
            assert woken is False  # the run was running, not waiting
            timer = _driver(run.id, run_at=t0 + _s(600), unique_key=_key(run.id, 1))
            refused = await store.update_run(
                run.id,
                state=RunState.WAITING,
                now=t0 + _s(2),
                expect=frozenset({RunState.RUNNING}),
                generation=0,
                waiting_for="paid",
                wake_at=t0 + _s(600),
                driver=timer,
            )
            assert refused is None
            got = await store.get_run(run.id)
            assert (got.state, got.generation, got.waiting_for) == (RunState.RUNNING, 0, None)
            assert await _jobs_with_key(store, _key(run.id, 1)) == []
            # the caller takes the event instead; then a wait for the same name may park
            _assert_event(await store.take_event(run.id, "paid", seq=4, now=t0 + _s(3)), early, 4)
            parked = await store.update_run(
                run.id,
                state=RunState.WAITING,
                now=t0 + _s(4),
                generation=0,
                waiting_for="paid",
                wake_at=t0 + _s(600),
                driver=timer,
            )
            assert parked is not None
            assert (parked.state, parked.generation, parked.waiting_for) == (
                RunState.WAITING,
                1,
                "paid",
            )
            assert [j.id for j in await _jobs_with_key(store, _key(run.id, 1))] == [timer.id]

        _run(store_factory, body)

    def test_an_event_of_another_name_does_not_block_parking(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            t0 = _t0()
            run = await _start(store, now=t0)
            other = await _start(store, now=t0)
            await store.send_event(
                _event(run.id, "shipped", now=t0), driver=_driver(run.id, run_at=t0), now=t0
            )
            await store.send_event(
                _event(other.id, "paid", now=t0), driver=_driver(other.id, run_at=t0), now=t0
            )
            parked = await _park_waiting(store, run, "paid", now=t0 + _s(1))
            assert parked.waiting_for == "paid"

        _run(store_factory, body)
