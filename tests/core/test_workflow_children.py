"""Child workflows on the memory store, driven by real workers: ``wf.child`` starts a child
once and wakes on its end, a child's failure reaches the parent, ``wf.spawn`` does not wait,
a crash between checkpointing the child and creating it is recovered; and a finished run is
replayed from a step."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dispatch_core import (
    Engine,
    RunState,
    StepKind,
    StepState,
    Workflow,
    WorkflowError,
    WorkflowFailedError,
)
from dispatch_core.models import NewJob
from dispatch_core.stores import MemoryStore
from dispatch_core.workflows.errors import ChildWorkflowFailedError
from dispatch_core.workflows.models import NewRun, RunFilter, WorkflowRun


def make_engine(store: MemoryStore | None = None) -> Engine:
    return Engine(store or MemoryStore(), load_entrypoints=False)


async def children_of(engine: Engine, run_id: str) -> list[WorkflowRun]:
    return await engine.store.list_runs(RunFilter(parent_run_id=run_id))


async def test_a_child_runs_once_though_the_parent_replays_and_its_output_returns() -> None:
    engine = make_engine()
    calls: list[str] = []

    @engine.workflow(name="charge")
    async def charge(wf: Workflow, cents: int) -> dict[str, int]:
        await wf.step("bill", lambda: calls.append("bill"))
        await wf.sleep("settle", 0.05)  # the child parks too: the parent waits across it
        return {"charged": cents}

    @engine.workflow(name="order")
    async def order(wf: Workflow, cents: int) -> Any:
        receipt = await wf.child(charge, cents, name="payment")
        await wf.sleep("cool-off", 0.05)  # the parent replays once more after the child
        await wf.step("ship", lambda: calls.append("ship"))
        return receipt

    handle = await order.astart(1999, tenant="acme")
    await engine.drain(wait_scheduled=True)
    assert await handle.aresult(timeout=1) == {"charged": 1999}
    assert calls == ["bill", "ship"]  # the child's step ran once
    [child] = await children_of(engine, handle.id)
    assert (child.name, child.state, child.tenant) == ("charge", RunState.COMPLETED, "acme")
    timeline = await handle.atimeline()
    record = timeline[0]
    assert (record.name, record.kind, record.state) == (
        "payment",
        StepKind.CHILD,
        StepState.COMPLETED,
    )
    assert record.output == {"run_id": child.id, "output": {"charged": 1999}}
    parent = await handle.aget()
    assert parent.generation >= 2  # it parked for the child, then for its own sleep


async def test_the_parent_waits_parked_and_wakes_when_the_child_completes() -> None:
    engine = make_engine()

    @engine.workflow(name="approve")
    async def approve(wf: Workflow) -> Any:
        return await wf.wait_for_event("approved")

    @engine.workflow(name="request")
    async def request(wf: Workflow) -> Any:
        decision = await wf.child(approve, name="approval")
        return {"decision": decision}

    handle = await request.astart()
    await engine.drain()
    parent = await handle.aget()
    [child] = await children_of(engine, handle.id)
    assert parent.state is RunState.WAITING
    assert parent.waiting_for == f"child:{child.id}"
    assert child.state is RunState.WAITING
    await engine.asend_event("approved", "yes", run_id=child.id)
    await engine.drain()  # the child completes, and its end wakes the parent
    assert await handle.aresult(timeout=1) == {"decision": "yes"}


async def test_a_child_failure_propagates_to_the_parent_which_compensates() -> None:
    engine = make_engine()
    undone: list[str] = []

    def refuse() -> None:
        raise RuntimeError("card declined")

    @engine.workflow(name="pay")
    async def pay(wf: Workflow) -> None:
        await wf.step("card", refuse)

    caught: list[ChildWorkflowFailedError] = []

    @engine.workflow(name="checkout")
    async def checkout(wf: Workflow) -> None:
        await wf.step("reserve", lambda: "r1", compensate=lambda r: undone.append(f"free {r}"))
        try:
            await wf.child("pay", name="payment")
        except ChildWorkflowFailedError as exc:
            caught.append(exc)
            raise

    handle = await checkout.astart()
    await engine.drain()
    with pytest.raises(WorkflowFailedError, match=r"child workflow 'payment'.*card declined"):
        await handle.aresult(timeout=1)
    [child] = await children_of(engine, handle.id)
    assert child.state is RunState.FAILED
    assert [(e.run_id, e.step) for e in caught] == [(child.id, "payment")]
    assert undone == ["free r1"]
    record = next(r for r in await handle.atimeline() if r.name == "payment")
    assert record.state is StepState.FAILED
    assert "card declined" in (record.error or "")


async def test_a_cancelled_child_fails_the_waiting_parent() -> None:
    engine = make_engine()

    @engine.workflow(name="slow")
    async def slow(wf: Workflow) -> None:
        await wf.sleep("forever", 3600)

    @engine.workflow(name="boss")
    async def boss(wf: Workflow) -> None:
        await wf.child(slow, name="worker")

    handle = await boss.astart()
    await engine.drain()
    [child] = await children_of(engine, handle.id)
    await engine.acancel_run(child.id)
    await engine.drain()
    with pytest.raises(WorkflowFailedError, match=r"child workflow 'worker'.*cancelled"):
        await handle.aresult(timeout=1)


async def test_spawn_starts_a_child_once_without_waiting_for_it() -> None:
    engine = make_engine()
    started: list[str] = []

    @engine.workflow(name="report")
    async def report(wf: Workflow, month: str) -> str:
        await wf.step("build", lambda: started.append(month))
        await wf.sleep("long", 3600)  # it never finishes during this test
        return month

    @engine.workflow(name="monthly")
    async def monthly(wf: Workflow) -> str:
        child_id = await wf.spawn(report, "2024-05", name="report")
        await wf.sleep("then", 0.05)  # the parent replays: spawn must not start another
        return str(child_id)

    handle = await monthly.astart()
    await engine.drain(wait_scheduled=False)
    await asyncio.sleep(0.06)
    await engine.drain()
    child_id = await handle.aresult(timeout=1)  # finished while the child still sleeps
    [child] = await children_of(engine, handle.id)
    assert child.id == child_id
    assert child.state is RunState.SLEEPING
    assert started == ["2024-05"]
    [record, _] = await handle.atimeline()
    assert (record.kind, record.state, record.output) == (
        StepKind.CHILD,
        StepState.COMPLETED,
        {"run_id": child_id},
    )


async def test_a_crash_between_the_child_record_and_its_creation_is_recovered() -> None:
    store = MemoryStore()
    engine = make_engine(store)
    ran: list[str] = []
    entered = asyncio.Event()
    real_create = store.create_run
    crashes = {"left": 1}

    async def create_run(run: NewRun, driver: NewJob) -> WorkflowRun:
        if run.parent_run_id is not None and crashes["left"]:
            crashes["left"] -= 1
            entered.set()
            await asyncio.Event().wait()  # the worker dies here, before the child exists
        return await real_create(run, driver)

    store.create_run = create_run  # type: ignore[method-assign]

    @engine.workflow(name="leaf")
    async def leaf(wf: Workflow) -> str:
        await wf.step("work", lambda: ran.append("leaf"))
        return "leaf done"

    @engine.workflow(name="root")
    async def root(wf: Workflow) -> Any:
        return await wf.child(leaf, name="leaf")

    handle = await root.astart()
    worker = engine.worker(concurrency=2)
    task = asyncio.ensure_future(worker.run())
    await asyncio.wait_for(entered.wait(), 5)
    worker.stop(grace=0)  # hard stop: the parent's driver goes back to the queue
    await task
    [pending] = await handle.atimeline()
    assert (pending.kind, pending.state) == (StepKind.CHILD, StepState.PENDING)
    assert await children_of(engine, handle.id) == []  # checkpointed, not created
    await engine.drain()
    assert await handle.aresult(timeout=1) == "leaf done"
    [child] = await children_of(engine, handle.id)
    assert isinstance(pending.output, dict)
    assert child.id == pending.output["run_id"]  # the checkpointed id was used
    assert ran == ["leaf"]


async def test_children_in_parallel_each_wake_the_parent() -> None:
    engine = make_engine()

    @engine.workflow(name="square")
    async def square(wf: Workflow, n: int) -> int:
        await wf.sleep("think", 0.02 * (3 - n))
        return n * n

    @engine.workflow(name="fan")
    async def fan(wf: Workflow) -> list[Any]:
        return await wf.parallel(*(wf.child(square, n, name=f"sq-{n}") for n in range(3)))

    handle = await fan.astart()
    await engine.drain(wait_scheduled=True)
    assert await handle.aresult(timeout=1) == [0, 1, 4]
    assert len(await children_of(engine, handle.id)) == 3


async def test_replay_from_a_step_reruns_it_and_what_follows_as_a_new_run() -> None:
    engine = make_engine()
    calls: list[str] = []
    broken = {"ship": True}

    def ship(parcel: str) -> str:
        calls.append("ship")
        if broken["ship"]:
            raise RuntimeError("carrier down")
        return f"shipped {parcel}"

    def pack() -> str:
        calls.append("pack")
        return "box-1"

    @engine.workflow(name="fulfil")
    async def fulfil(wf: Workflow) -> Any:
        parcel = await wf.step("pack", pack)
        note = await wf.wait_for_event("label")
        return {"note": note, "ship": await wf.step("ship", ship, parcel)}

    handle = await fulfil.astart()
    await engine.asend_event("label", "fragile", run_id=handle.id)
    await engine.drain()
    with pytest.raises(WorkflowFailedError, match="carrier down"):
        await handle.aresult(timeout=1)
    with pytest.raises(WorkflowError, match="no step 'nope'"):
        await engine.areplay_run(handle.id, "nope")
    broken["ship"] = False  # fixed: run it again from the failed step
    replayed = await engine.areplay_run(handle.id, "ship")
    assert replayed.id != handle.id
    await engine.drain()
    done = await engine.aget_run(replayed.id)
    assert (done.state, done.output) == (
        RunState.COMPLETED,
        {"note": "fragile", "ship": "shipped box-1"},
    )
    assert calls == ["pack", "ship", "ship"]  # "pack" and the event were not redone
    assert (await handle.aget()).state is RunState.FAILED  # the original stays as it was


async def test_a_run_still_going_is_not_replayed() -> None:
    engine = make_engine()

    @engine.workflow(name="idle")
    async def idle(wf: Workflow) -> None:
        await wf.sleep("nap", 3600)

    handle = await idle.astart()
    await engine.drain()
    with pytest.raises(WorkflowError, match="cancel it before replaying"):
        await engine.areplay_run(handle.id, "nap")
