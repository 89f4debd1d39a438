"""The workflow half of the conformance suite: runs, their history, events and driver jobs.

:class:`WorkflowConformance` checks the "durable workflows" section of
:class:`~dispatch_core.store.Store` (``create_run`` ... ``take_event``). It follows the rules of
the rest of the suite: plain synchronous tests, one ``store_factory`` fixture, several instances
from it standing for several processes on one database, and explicit ``now=`` values so that
nothing sleeps.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest

from dispatch_core._ids import new_id
from dispatch_core.errors import JobNotFoundError, RunNotFoundError
from dispatch_core.models import Job, JobFilter, NewJob
from dispatch_core.states import JobState
from dispatch_core.store import Store
from dispatch_core.testing._helpers import (
    StoreFactory,
    _claim,
    _near,
    _run,
    _s,
    _t0,
    make_new_job,
)
from dispatch_core.workflows.models import (
    NewEvent,
    NewRun,
    RunFilter,
    RunState,
    StepKind,
    StepRecord,
    StepState,
    WorkflowEvent,
    WorkflowRun,
)

__all__ = ["WorkflowConformance"]

_DRIVER = "conformance.workflow.drive"
_WF = "conformance.workflow"

#: A JSON value with every kind of member, to check that inputs and outputs round-trip exactly.
_RICH: dict[str, Any] = {
    "order": "ord_42",
    "amount": 12.5,
    "count": 3,
    "lines": [{"sku": "a-1", "qty": 2}, {"sku": "b-2", "qty": 1}],
    "flags": [True, False, None],
    "note": "caf\u00e9 \u2713",
    "empty": {},
}


def _run_ids(n: int) -> list[str]:
    """``n`` new run ids, in ascending order (so the last one is the newest)."""
    return sorted(new_id("run") for _ in range(n))


def _new_run(
    *,
    now: datetime,
    run_id: str | None = None,
    name: str = _WF,
    version: int = 1,
    input: Any = None,
    tenant: str | None = None,
    parent_run_id: str | None = None,
    correlation_key: str | None = None,
) -> NewRun:
    return NewRun(
        id=run_id or new_id("run"),
        name=name,
        version=version,
        input={"n": 1} if input is None else input,
        created_at=now,
        tenant=tenant,
        parent_run_id=parent_run_id,
        correlation_key=correlation_key,
    )


def _driver(
    run_id: str, *, run_at: datetime, unique_key: str | None = None, tenant: str | None = None
) -> NewJob:
    """A driver job for the run, due at ``run_at``."""
    return make_new_job(
        _DRIVER, payload={"run_id": run_id}, run_at=run_at, unique_key=unique_key, tenant=tenant
    )


def _key(run_id: str, generation: int) -> str:
    """The unique key of the wake-up job of park ``generation``."""
    return f"wf:{run_id}:{generation}"


def _event(
    run_id: str,
    name: str,
    *,
    now: datetime,
    payload: Any = None,
    tenant: str | None = None,
) -> NewEvent:
    return NewEvent(
        id=new_id("evt"),
        run_id=run_id,
        name=name,
        payload={"event": name} if payload is None else payload,
        created_at=now,
        tenant=tenant,
    )


def _step(
    seq: int,
    *,
    now: datetime,
    name: str | None = None,
    kind: StepKind = StepKind.STEP,
    state: StepState = StepState.COMPLETED,
    output: Any = None,
    error: str | None = None,
    attempts: int = 1,
    wake_at: datetime | None = None,
) -> StepRecord:
    return StepRecord(
        seq=seq,
        name=name or f"step-{seq}",
        kind=kind,
        state=state,
        started_at=now,
        finished_at=None if state is StepState.PENDING else now + _s(1),
        output=output,
        error=error,
        attempts=attempts,
        wake_at=wake_at,
    )


def _assert_step(got: StepRecord, want: StepRecord) -> None:
    fields = ("seq", "name", "kind", "state", "output", "error", "attempts")
    assert [getattr(got, f) for f in fields] == [getattr(want, f) for f in fields]
    for f in ("started_at", "finished_at", "wake_at"):
        assert _near(getattr(got, f), getattr(want, f)), (f, getattr(got, f), getattr(want, f))


def _assert_new_run(got: WorkflowRun, want: NewRun) -> None:
    """``got`` is the untouched run ``want`` created."""
    assert (got.id, got.name, got.version, got.input) == (
        want.id,
        want.name,
        want.version,
        want.input,
    )
    assert (got.tenant, got.parent_run_id, got.correlation_key) == (
        want.tenant,
        want.parent_run_id,
        want.correlation_key,
    )
    assert got.state is RunState.RUNNING
    assert got.generation == 0
    assert (got.output, got.error, got.waiting_for) == (None, None, None)
    assert got.finished_at is None
    assert got.wake_at is None
    assert _near(got.created_at, want.created_at), (got.created_at, want.created_at)
    assert _near(got.updated_at, want.created_at), (got.updated_at, want.created_at)


def _same_run(a: WorkflowRun, b: WorkflowRun) -> bool:
    """Whether two reads of a run agree on everything ``update_run`` may write."""
    return (
        a.state is b.state
        and a.generation == b.generation
        and a.output == b.output
        and a.error == b.error
        and a.waiting_for == b.waiting_for
        and _near(a.wake_at, b.wake_at)
        and _near(a.updated_at, b.updated_at)
        and _near(a.finished_at, b.finished_at)
    )


def _assert_event(got: WorkflowEvent | None, want: NewEvent, consumed_seq: int) -> None:
    assert got is not None, f"expected event {want.id}"
    assert (got.id, got.run_id, got.name, got.payload, got.tenant) == (
        want.id,
        want.run_id,
        want.name,
        want.payload,
        want.tenant,
    )
    assert got.consumed_seq == consumed_seq
    assert _near(got.created_at, want.created_at), (got.created_at, want.created_at)


async def _jobs_with_key(store: Store, key: str) -> list[Job]:
    return [j for j in await store.list_jobs(JobFilter(limit=1000)) if j.unique_key == key]


async def _start(
    store: Store, *, now: datetime, tenant: str | None = None, **kw: Any
) -> WorkflowRun:
    """Create a run (and its first driver, key ``wf:<id>:0``) at ``now``."""
    new = _new_run(now=now, tenant=tenant, **kw)
    return await store.create_run(
        new, _driver(new.id, run_at=now, unique_key=_key(new.id, 0), tenant=tenant)
    )


async def _park_waiting(
    store: Store,
    run: WorkflowRun,
    name: str,
    *,
    now: datetime,
    timeout_at: datetime | None = None,
) -> WorkflowRun:
    """Park a running run waiting for ``name``; with ``timeout_at``, with its timer job."""
    gen = run.generation + 1
    timer = (
        None
        if timeout_at is None
        else _driver(run.id, run_at=timeout_at, unique_key=_key(run.id, gen))
    )
    parked = await store.update_run(
        run.id,
        state=RunState.WAITING,
        now=now,
        expect=frozenset({RunState.RUNNING}),
        generation=run.generation,
        waiting_for=name,
        wake_at=timeout_at,
        driver=timer,
    )
    assert parked is not None
    assert parked.generation == gen
    return parked


class WorkflowConformance:
    """The workflow rules of :class:`dispatch_core.store.Store`, as tests. Subclass and give
    ``store_factory`` (the same fixture as :class:`~dispatch_core.testing.StoreConformance`)."""

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
