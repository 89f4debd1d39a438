"""Job flags: ``internal`` (the engine's and plugins' own jobs, never enqueued from outside)
and ``operator_only``. The core records them; the admin API enforces them (its tests), and
in-process code keeps enqueueing internal jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from dispatch_core import Engine, JobState, Workflow
from dispatch_core.workflows.runtime import DRIVER_JOB


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    engine = Engine("memory://", load_entrypoints=False)
    yield engine
    await engine.aclose()
    engine.close()


def test_flags_default_to_false_and_are_kept_on_the_definition(engine: Engine) -> None:
    @engine.job(name="plain")
    async def plain() -> None: ...

    @engine.job(name="own", internal=True, aliases=["own.old"])
    async def own() -> None: ...

    @engine.job(name="ops.rebuild", operator_only=True)
    async def rebuild() -> None: ...

    assert (plain.internal, plain.operator_only) == (False, False)
    assert (own.internal, own.operator_only) == (True, False)
    assert (rebuild.internal, rebuild.operator_only) == (False, True)
    # an alias is the same definition, flags included
    assert engine.jobs["own.old"] is own
    assert engine.jobs["own.old"].internal


def test_the_workflow_driver_job_is_internal(engine: Engine) -> None:
    @engine.workflow(name="flow")
    async def flow(wf: Workflow) -> None: ...

    driver = engine.jobs[DRIVER_JOB]
    assert driver.internal
    assert not driver.operator_only


async def test_in_process_code_enqueues_internal_jobs_by_name_and_by_definition(
    engine: Engine,
) -> None:
    seen: list[Any] = []

    @engine.job(name="own", internal=True)
    async def own(n: int) -> None:
        seen.append(n)

    by_name = await engine.aenqueue("own", 1)
    by_definition = await own.aenqueue(2)
    [many] = await engine.aenqueue_many("own", [3])
    await engine.drain()

    assert sorted(seen) == [1, 2, 3]
    for job in (by_name, by_definition, many):
        assert (await engine.aget_job(job.id)).state is JobState.COMPLETED


async def test_workflows_still_run_through_their_internal_driver(engine: Engine) -> None:
    @engine.workflow(name="flow")
    async def flow(wf: Workflow, n: int) -> int:
        return int(await wf.step("double", lambda: n * 2))

    run = await flow.astart(21)
    await engine.drain()
    assert (await engine.aget_run(run.id)).output == 42
