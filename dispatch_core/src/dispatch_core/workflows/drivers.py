"""The jobs that drive workflow runs: their name and unique keys, how one is built, and how a
finished child run wakes its parent.

A run is driven by ordinary jobs of the internal job :data:`DRIVER_JOB`. Each park of a run
(a sleep, an event, a child) has a generation, and the job that wakes it has the unique key
``wf:<run id>:<generation>``, so that one park is driven by one job whatever the wake-ups.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from dispatch_core._ids import new_id
from dispatch_core.errors import RunNotFoundError
from dispatch_core.models import NewJob, utcnow
from dispatch_core.workflows.models import TERMINAL_RUN_STATES, NewEvent, WorkflowRun

if TYPE_CHECKING:
    from dispatch_core.engine import Engine

__all__ = [
    "DRIVER_JOB",
    "driver_key",
    "generation_of",
    "cancel_key",
    "child_event",
    "new_driver",
    "notify_parent",
]

#: The job that drives runs: its payload is ``{"run_id": ...}``.
DRIVER_JOB = "dispatch.workflow"


def driver_key(run_id: str, generation: int) -> str:
    """The unique key of the job that drives park ``generation`` of a run."""
    return f"wf:{run_id}:{generation}"


def generation_of(key: str | None) -> int | None:
    """The park generation a driver job's unique key names (``None``: not a park's key)."""
    if key is None or not key.startswith("wf:"):
        return None
    try:
        return int(key.rsplit(":", 1)[1])
    except ValueError:
        return None


def cancel_key(run_id: str) -> str:
    """The unique key of the job that runs a cancelled run's compensations."""
    return f"wf:{run_id}:cancel"


def child_event(child_run_id: str) -> str:
    """The internal event a child run sends its parent when it finishes (the parent waits
    for it in ``wf.child``)."""
    return f"child:{child_run_id}"


def new_driver(
    *,
    run: WorkflowRun,
    generation: int,
    queue: str,
    priority: int,
    run_at: datetime | None,
    now: datetime | None = None,
    unique_key: str | None = None,
) -> NewJob:
    """The driver job of park ``generation`` of ``run`` (or with ``unique_key``)."""
    now = now or utcnow()
    return NewJob(
        id=new_id("job"),
        name=DRIVER_JOB,
        queue=queue,
        payload={"run_id": run.id},
        priority=priority,
        max_attempts=25,  # a driver that fails (store outage) tries again; steps are checkpointed
        timeout=None,
        run_at=run_at or now,
        created_at=now,
        unique_key=unique_key or driver_key(run.id, generation),
        tenant=run.tenant,
    )


async def notify_parent(engine: Engine, run: WorkflowRun) -> None:
    """Tell the parent of a finished child run, by the event ``child:<run id>``, so that a
    parent parked in ``wf.child`` wakes. Sent each time a driver sees the child finished
    (a crash after the child's last write must not lose it); extra copies are never read."""
    if run.parent_run_id is None:
        return
    store = engine.store
    try:
        parent = await store.get_run(run.parent_run_id)
    except RunNotFoundError:
        return
    if parent.state in TERMINAL_RUN_STATES:
        return
    queue, priority = engine.workflow_registry.driver_options(parent)
    now = utcnow()
    driver = new_driver(
        run=parent, generation=parent.generation, queue=queue, priority=priority, run_at=None
    )
    with engine.producer.scope((driver,)):
        woken = await store.send_event(
            NewEvent(
                id=new_id("evt"),
                run_id=parent.id,
                name=child_event(run.id),
                payload={"state": run.state.value},
                created_at=now,
                tenant=parent.tenant,
            ),
            driver=driver,
            now=now,
        )
    if woken:
        engine.producer.wake()
