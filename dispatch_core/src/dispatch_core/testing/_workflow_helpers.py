"""What the workflow tests of the conformance suite share: runs, drivers, events and steps to
write, and the assertions that compare what a store gives back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dispatch_core._ids import new_id
from dispatch_core.models import Job, JobFilter, NewJob
from dispatch_core.store import Store
from dispatch_core.testing._helpers import (
    _near,
    _s,
    make_new_job,
)
from dispatch_core.workflows.models import (
    NewEvent,
    NewRun,
    RunState,
    StepKind,
    StepRecord,
    StepState,
    WorkflowEvent,
    WorkflowRun,
)

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
