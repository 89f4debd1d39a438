"""``tenant_scope``: the tenant of what is enqueued or started inside it, carried into the
handler's context and on to the jobs the handler enqueues; and the isolation of unique keys
and workflow drivers between tenants."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from dispatch_core import (
    Engine,
    JobContext,
    RunState,
    Workflow,
    current_tenant,
    tenant_scope,
)
from dispatch_core.stores import MemoryStore
from dispatch_core.workflows.runtime import DRIVER_JOB


def make_engine() -> Engine:
    return Engine(MemoryStore(), load_entrypoints=False)


async def test_a_scope_sets_the_tenant_of_jobs_and_handlers_see_it() -> None:
    engine = make_engine()
    seen: list[tuple[str, str | None, str | None]] = []

    @engine.job(name="child")
    async def child(ctx: JobContext) -> None:
        seen.append(("child", ctx.tenant, current_tenant()))

    @engine.job(name="parent")
    async def parent(ctx: JobContext) -> None:
        seen.append(("parent", ctx.tenant, current_tenant()))
        await child.aenqueue()  # inherits the running job's tenant

    assert current_tenant() is None
    with tenant_scope("acme"):
        assert current_tenant() == "acme"
        job = await parent.aenqueue()
        with tenant_scope(None):  # an inner scope clears it
            untenanted = await child.aenqueue()
        explicit = await child.aenqueue(tenant="other")  # an explicit tenant wins
    assert current_tenant() is None
    assert (job.tenant, untenanted.tenant, explicit.tenant) == ("acme", None, "other")

    await engine.drain()
    assert ("parent", "acme", "acme") in seen
    assert seen.count(("child", "acme", "acme")) == 1
    assert ("child", None, None) in seen
    assert ("child", "other", "other") in seen
    children = await engine.alist_jobs(name="child", tenant="acme")
    assert len(children) == 1


async def test_unique_keys_are_scoped_by_tenant() -> None:
    engine = make_engine()

    @engine.job(name="send")
    async def send(n: int) -> None: ...

    with tenant_scope("a"):
        first = await send.aenqueue(1, unique_key="k")
        again = await send.aenqueue(2, unique_key="k")
    with tenant_scope("b"):
        other = await send.aenqueue(3, unique_key="k")
    assert again.id == first.id
    assert other.id != first.id
    assert (other.tenant, other.payload) == ("b", 3)  # b never sees a's job


async def test_workflow_runs_take_the_scope_and_their_steps_see_it() -> None:
    engine = make_engine()
    tenants: list[str | None] = []

    def step() -> str | None:
        tenants.append(current_tenant())
        return current_tenant()

    @engine.workflow(name="flow")
    async def flow(wf: Workflow, _: int) -> Any:
        return await wf.step("look", step)

    with tenant_scope("acme"):
        handle = await flow.astart(0)
    await engine.drain()
    run = await handle.aget()
    assert (run.tenant, run.state, run.output) == ("acme", RunState.COMPLETED, "acme")
    assert tenants == ["acme"]


async def test_a_driver_job_of_another_tenant_cannot_drive_a_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = make_engine()
    ran: list[str] = []

    @engine.workflow(name="flow")
    async def flow(wf: Workflow, _: int) -> None:
        await wf.step("work", lambda: ran.append("work"))

    with tenant_scope("a"):
        handle = await flow.astart(0)
    # Tenant b forges the run's first driver: same job name, payload and unique key, which keys
    # scoped by tenant let it hold beside tenant a's real one. The store's guards already keep
    # a stray driver from waking a parked run early; the driver refuses it outright.
    with tenant_scope("b"):
        forged = await engine.aenqueue(
            DRIVER_JOB, {"run_id": handle.id}, unique_key=f"wf:{handle.id}:0"
        )
    assert forged.tenant == "b"
    with caplog.at_level(logging.WARNING, logger="dispatch_core"):
        await engine.drain()
    refused = [r.getMessage() for r in caplog.records if forged.id in r.getMessage()]
    assert refused, caplog.text
    assert "another tenant" in refused[0]
    run = await handle.aget()
    assert (run.state, run.tenant) == (RunState.COMPLETED, "a")  # its own driver ran it
    assert ran == ["work"]
