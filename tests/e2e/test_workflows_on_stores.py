"""Durable workflows end to end on SQLite and PostgreSQL: a run parked on a timer and on an
event is finished by a different engine (another process, as far as the store can tell),
steps are not run again, and a failure compensates."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dispatch_core import Engine, RunState, StepKind, Workflow, WorkflowFailedError


def _order_app(url: str, calls: list[str]) -> Engine:
    engine = Engine(url, load_entrypoints=True)

    def charge(cents: int) -> str:
        calls.append("charge")
        return f"ch-{cents}"

    def ship(mode: str) -> str:
        calls.append(f"ship {mode}")
        if mode == "sea":
            raise RuntimeError("no boats today")
        return f"parcel by {mode}"

    @engine.workflow(name="e2e.order")
    async def order(wf: Workflow, cents: int) -> Any:
        receipt = await wf.step(
            "charge", charge, cents, compensate=lambda r: calls.append(f"refund {r}")
        )
        await wf.sleep("cool-off", 0.2)
        mode = await wf.wait_for_event("shipping-mode", timeout=30)
        parcel = await wf.step("ship", ship, mode)
        return {"receipt": receipt, "parcel": parcel}

    return engine


async def test_a_run_survives_a_restart_between_timer_and_event(store_url: str) -> None:
    calls: list[str] = []
    first = _order_app(store_url, calls)
    handle = await first.workflows["e2e.order"].astart(1999)
    await first.drain()
    assert (await handle.aget()).state is RunState.SLEEPING
    await first.aclose()

    second = _order_app(store_url, calls)  # "another process"
    await asyncio.sleep(0.25)  # the cool-off timer is due
    await second.drain()
    run = await second.aget_run(handle.id)
    assert run.state is RunState.WAITING
    assert await second.asend_event("shipping-mode", "air", run_id=handle.id) == [handle.id]
    await second.drain()
    done = await second.aget_run(handle.id)
    assert done.state is RunState.COMPLETED
    assert done.output == {"receipt": "ch-1999", "parcel": "parcel by air"}
    assert calls == ["charge", "ship air"]  # nothing ran twice across the restart
    kinds = [r.kind for r in await second.atimeline(handle.id)]
    assert kinds == [StepKind.STEP, StepKind.SLEEP, StepKind.EVENT, StepKind.STEP]
    await second.aclose()


async def test_a_failed_step_compensates_on_every_store(store_url: str) -> None:
    calls: list[str] = []
    engine = _order_app(store_url, calls)
    handle = await engine.workflows["e2e.order"].astart(500)
    await engine.drain()
    await asyncio.sleep(0.25)
    await engine.drain()
    await engine.asend_event("shipping-mode", "sea", run_id=handle.id)
    await engine.drain()
    with pytest.raises(WorkflowFailedError, match="no boats today"):
        await handle.aresult(timeout=5)
    assert calls == ["charge", "ship sea", "refund ch-500"]
    await engine.aclose()
