"""Durable workflows on the memory store, driven by real workers: checkpointed steps, durable
timers, events, fan-out, sagas, determinism, versions, cancel, hooks."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from typing import Any

import attrs
import pytest

from dispatch_core import (
    Engine,
    EventTimeoutError,
    NonDeterminismError,
    PayloadError,
    RunNotFoundError,
    RunState,
    StepKind,
    StepRetry,
    StepState,
    Workflow,
    WorkflowError,
    WorkflowFailedError,
)
from dispatch_core.stores import MemoryStore
from dispatch_core.testing import capture_events


def make_engine(store: MemoryStore | None = None) -> Engine:
    return Engine(store or MemoryStore(), load_entrypoints=False)


@attrs.frozen
class Order:
    id: int
    cents: int


async def test_steps_run_once_and_the_run_completes_with_their_results() -> None:
    engine = make_engine()
    calls: list[str] = []

    def reserve(order_id: int) -> str:
        calls.append("reserve")
        return f"res-{order_id}"

    async def charge(cents: int) -> dict[str, int]:
        calls.append("charge")
        return {"charged": cents}

    @engine.workflow(name="order")
    async def order(wf: Workflow, o: Order) -> dict[str, Any]:
        reservation = await wf.step("reserve", reserve, o.id)
        payment = await wf.step("charge", charge, o.cents)
        return {"reservation": reservation, **payment}

    with capture_events(engine) as events:
        handle = await order.astart(Order(id=7, cents=1999))
        assert handle.id.startswith("wfrun_")
        await engine.drain()
    assert await handle.aresult(timeout=1) == {"reservation": "res-7", "charged": 1999}
    assert calls == ["reserve", "charge"]
    timeline = await handle.atimeline()
    assert [(r.seq, r.name, r.kind, r.state) for r in timeline] == [
        (0, "reserve", StepKind.STEP, StepState.COMPLETED),
        (1, "charge", StepKind.STEP, StepState.COMPLETED),
    ]
    assert timeline[0].output == "res-7"
    assert events.names().count("workflow_started") == 1
    assert events.names().count("workflow_step_completed") == 2
    assert events.names().count("workflow_completed") == 1
    run = await handle.aget()
    assert run.state is RunState.COMPLETED
    assert run.finished_at is not None


async def test_a_killed_driver_resumes_without_redoing_completed_steps() -> None:
    engine = make_engine()
    calls: list[str] = []
    gate = asyncio.Event()
    in_second = asyncio.Event()

    async def first() -> int:
        calls.append("first")
        return 1

    async def second() -> int:
        calls.append("second")
        in_second.set()
        await gate.wait()  # the worker dies while this step runs
        return 2

    @engine.workflow(name="two")
    async def two(wf: Workflow) -> int:
        a = await wf.step("first", first)
        b = await wf.step("second", second)
        return int(a) + int(b)

    handle = await two.astart()
    worker = engine.worker(concurrency=2)
    task = asyncio.ensure_future(worker.run())
    await asyncio.wait_for(in_second.wait(), 5)
    worker.stop(grace=0)  # hard stop: the driver job goes back to the queue
    await task
    gate.set()
    await engine.drain()
    assert await handle.aresult(timeout=1) == 3
    assert calls == ["first", "second", "second"]  # only the interrupted step ran again


async def test_sleep_is_a_durable_timer_that_a_restart_does_not_restart() -> None:
    store = MemoryStore()
    engine = make_engine(store)

    @engine.workflow(name="napper")
    async def napper(wf: Workflow) -> str:
        await wf.sleep("nap", 0.4)
        return "rested"

    handle = await napper.astart()
    t0 = time.monotonic()
    await engine.drain()  # runs up to the sleep, then nothing is runnable
    run = await handle.aget()
    assert run.state is RunState.SLEEPING
    assert run.wake_at is not None
    # A "new process": another engine on the same store picks the run up.
    other = make_engine(store)

    @other.workflow(name="napper")
    async def napper_again(wf: Workflow) -> str:
        await wf.sleep("nap", 0.4)
        return "rested"

    await asyncio.sleep(0.2)  # the "restart" takes a while
    await other.drain(wait_scheduled=True)
    elapsed = time.monotonic() - t0
    assert await handle.aresult(timeout=1) == "rested"
    assert elapsed >= 0.4
    [nap] = await handle.atimeline()
    assert (nap.kind, nap.state) == (StepKind.SLEEP, StepState.COMPLETED)
    # The timer kept its first deadline: the restart neither restarted nor lengthened it.
    assert nap.wake_at == run.wake_at
    assert nap.finished_at is not None
    assert nap.finished_at >= run.wake_at


async def test_wait_for_event_wakes_on_the_event_and_returns_its_payload() -> None:
    engine = make_engine()

    @engine.workflow(name="approval")
    async def approval(wf: Workflow, amount: int) -> Any:
        decision = await wf.wait_for_event("approved", timeout=60)
        return {"amount": amount, "decision": decision}

    handle = await approval.astart(500, tenant="acme")
    await engine.drain()
    run = await handle.aget()
    assert run.state is RunState.WAITING
    assert run.waiting_for == "approved"
    with pytest.raises(RunNotFoundError):  # another tenant cannot reach the run
        await engine.asend_event("approved", {"by": "mallory"}, run_id=handle.id, tenant="evil")
    reached = await engine.asend_event("approved", {"by": "ada"}, run_id=handle.id, tenant="acme")
    assert reached == [handle.id]
    await engine.drain()
    assert await handle.aresult(timeout=1) == {"amount": 500, "decision": {"by": "ada"}}


async def test_an_event_sent_before_the_wait_is_not_lost_and_correlation_keys_work() -> None:
    engine = make_engine()

    @engine.workflow(name="shipping")
    async def shipping(wf: Workflow) -> Any:
        await wf.step("pack", lambda: "packed")
        return await wf.wait_for_event("shipped")

    handle = await shipping.astart(correlation_key="order-42")
    reached = await engine.asend_event("shipped", "UPS-1", correlation_key="order-42")
    assert reached == [handle.id]
    await engine.drain()
    assert await handle.aresult(timeout=1) == "UPS-1"


async def test_an_event_timeout_is_durable_and_raises_in_the_workflow() -> None:
    engine = make_engine()

    @engine.workflow(name="impatient")
    async def impatient(wf: Workflow) -> str:
        try:
            await wf.wait_for_event("reply", timeout=0.2)
        except EventTimeoutError:
            return "gave up"
        return "replied"

    handle = await impatient.astart()
    await engine.drain(wait_scheduled=True)
    assert await handle.aresult(timeout=1) == "gave up"
    [wait] = await handle.atimeline()
    assert (wait.kind, wait.state) == (StepKind.EVENT, StepState.FAILED)


async def test_parallel_and_map_fan_out_and_keep_the_order() -> None:
    engine = make_engine()

    async def slow_double(n: int) -> int:
        await asyncio.sleep(0.05 * (3 - n))
        return n * 2

    @engine.workflow(name="fan")
    async def fan(wf: Workflow, items: list[int]) -> list[Any]:
        doubled = await wf.map("double", slow_double, items)
        a, b = await wf.parallel(wf.step("a", lambda: "A"), wf.step("b", lambda: "B"))
        return [*doubled, a, b]

    handle = await fan.astart([0, 1, 2])
    t0 = time.monotonic()
    await engine.drain()
    assert await handle.aresult(timeout=1) == [0, 2, 4, "A", "B"]
    assert time.monotonic() - t0 < 0.25  # ran at once, not one after the other
    names = [r.name for r in await handle.atimeline()]
    assert names == ["double[0]", "double[1]", "double[2]", "a", "b"]


async def test_a_failure_runs_the_compensations_in_reverse_and_fails_the_run() -> None:
    engine = make_engine()
    undone: list[str] = []

    def refuse(_: Any) -> None:
        raise RuntimeError("carrier refused the parcel")

    @engine.workflow(name="saga")
    async def saga(wf: Workflow) -> None:
        await wf.step("reserve", lambda: "r1", compensate=lambda r: undone.append(f"release {r}"))
        await wf.step("charge", lambda: "c1", compensate=lambda c: undone.append(f"refund {c}"))
        await wf.step("ship", refuse, None, retry=StepRetry(attempts=2, delay=0.01))

    with capture_events(engine) as events:
        handle = await saga.astart()
        await engine.drain()
    with pytest.raises(WorkflowFailedError, match="carrier refused"):
        await handle.aresult(timeout=1)
    assert undone == ["refund c1", "release r1"]
    timeline = await handle.atimeline()
    ship = next(r for r in timeline if r.name == "ship")
    assert (ship.state, ship.attempts) == (StepState.FAILED, 2)
    assert [r.name for r in timeline if r.kind is StepKind.COMPENSATION] == [
        "compensate:charge",
        "compensate:reserve",
    ]
    assert events.names().count("workflow_step_failed") == 1
    assert events.names().count("workflow_failed") == 1


async def test_a_replay_that_changes_the_order_of_steps_is_refused() -> None:
    engine = make_engine()
    flip = {"on": False}

    @engine.workflow(name="fickle")
    async def fickle(wf: Workflow) -> None:
        await wf.step("b" if flip["on"] else "a", lambda: 1)
        await wf.sleep("pause", 0.05)

    handle = await fickle.astart()
    await engine.drain()  # parked on the sleep after step "a"
    flip["on"] = True  # the code changed under a running run
    await engine.drain(wait_scheduled=True)
    with pytest.raises(WorkflowFailedError, match=r"not deterministic.*step 'a'.*step 'b'"):
        await handle.aresult(timeout=1)
    assert NonDeterminismError.__name__ in ((await handle.aget()).error or "")


async def test_a_repeated_step_name_is_an_error() -> None:
    engine = make_engine()

    @engine.workflow(name="loop")
    async def loop(wf: Workflow) -> None:
        for _ in range(2):
            await wf.step("same", lambda: 1)

    handle = await loop.astart()
    await engine.drain()
    with pytest.raises(WorkflowFailedError, match="uses the name 'same' twice"):
        await handle.aresult(timeout=1)


async def test_a_run_keeps_its_version_and_new_runs_take_the_latest() -> None:
    engine = make_engine()

    @engine.workflow(name="greet", version=1)
    async def greet_v1(wf: Workflow) -> str:
        await wf.sleep("wait", 0.05)
        return "v1"

    old = await greet_v1.astart()
    await engine.drain()

    @engine.workflow(name="greet", version=2)
    async def greet_v2(wf: Workflow) -> str:
        return "v2"

    new = await greet_v1.astart()  # through any version's handle: the latest starts
    await engine.drain(wait_scheduled=True)
    assert await old.aresult(timeout=1) == "v1"
    assert await new.aresult(timeout=1) == "v2"
    assert (await new.aget()).version == 2


async def test_cancel_stops_a_parked_run_and_runs_its_compensations() -> None:
    engine = make_engine()
    undone: list[str] = []

    @engine.workflow(name="long")
    async def long(wf: Workflow) -> None:
        await wf.step("book", lambda: "room", compensate=lambda r: undone.append(f"free {r}"))
        await wf.sleep("until-checkin", timedelta(hours=1))
        await wf.step("checkin", lambda: None)

    handle = await long.astart()
    await engine.drain()
    assert (await handle.aget()).state is RunState.SLEEPING
    cancelled = await engine.acancel_run(handle.id)
    assert cancelled.state is RunState.CANCELLED
    await engine.drain()
    assert undone == ["free room"]
    names = [r.name for r in await handle.atimeline()]
    assert "checkin" not in names
    assert names[-1] == "compensate:book"


def test_start_from_sync_code() -> None:
    engine = make_engine()

    @engine.workflow(name="sync-start")
    async def sync_start(wf: Workflow, n: int) -> int:
        return int(await wf.step("inc", lambda: n + 1))

    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(sync_start.start(41).id))
    thread.start()
    thread.join()

    async def finish() -> Any:
        await engine.drain()
        return (await engine.aget_run(result[0])).output

    assert asyncio.run(finish()) == 42


async def test_unknown_runs_and_bad_inputs_are_refused() -> None:
    engine = make_engine()

    @engine.workflow(name="typed")
    async def typed(wf: Workflow, o: Order) -> None: ...

    with pytest.raises(RunNotFoundError):
        await engine.aget_run("wfrun_nope")
    with pytest.raises(PayloadError, match=r"\$\.cents"):
        await typed.astart({"id": 1})
    assert await engine.alist_runs() == []


async def test_migrate_run_moves_a_parked_run_to_another_version() -> None:
    engine = make_engine()

    @engine.workflow(name="mig", version=1)
    async def mig_v1(wf: Workflow) -> str:
        await wf.sleep("wait", 0.05)
        return "v1"

    handle = await mig_v1.astart()
    await engine.drain()  # parked on the sleep, on version 1

    @engine.workflow(name="mig", version=2)
    async def mig_v2(wf: Workflow) -> str:
        await wf.sleep("wait", 0.05)  # same primitives up to where the run stands
        return "v2"

    with pytest.raises(WorkflowError, match="no version 7"):
        await engine.amigrate_run(handle.id, 7)
    moved = await engine.amigrate_run(handle.id, 2)
    assert moved.version == 2
    await engine.drain(wait_scheduled=True)
    assert await handle.aresult(timeout=1) == "v2"
    with pytest.raises(WorkflowError, match="could not be migrated: it is completed"):
        await engine.amigrate_run(handle.id, 1)
