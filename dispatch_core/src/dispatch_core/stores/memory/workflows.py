"""The memory store's durable-workflow section: runs, their step history and their events."""

from __future__ import annotations

from datetime import datetime

import attrs

from dispatch_core.errors import RunNotFoundError
from dispatch_core.models import NewJob
from dispatch_core.storekit import Truncated
from dispatch_core.stores.memory.state import PENDING, MemoryState, page
from dispatch_core.workflows.models import (
    TERMINAL_RUN_STATES,
    NewEvent,
    NewRun,
    RunFilter,
    RunState,
    StepRecord,
    StepState,
    WorkflowEvent,
    WorkflowRun,
)

__all__ = ["WorkflowOps"]


class WorkflowOps(MemoryState):
    """Workflow runs, their steps and the events sent to them."""

    def _get_run(self, run_id: str) -> WorkflowRun:
        try:
            return self._runs[run_id]
        except KeyError:
            raise RunNotFoundError(run_id) from None

    def _pending_event(self, run_id: str, name: str) -> int | None:
        """The index of the oldest unconsumed event ``name`` of the run, or ``None``."""
        best: int | None = None
        events = self._events.get(run_id, [])
        for i, ev in enumerate(events):
            if ev.name != name or ev.consumed_seq is not None:
                continue
            if best is None or (ev.created_at, ev.id) < (events[best].created_at, events[best].id):
                best = i
        return best

    async def create_run(self, run: NewRun, driver: NewJob) -> WorkflowRun:
        created = WorkflowRun(
            id=run.id,
            name=run.name,
            version=run.version,
            input=run.input,
            state=RunState.RUNNING,
            created_at=run.created_at,
            updated_at=run.created_at,
            tenant=run.tenant,
            parent_run_id=run.parent_run_id,
            correlation_key=run.correlation_key,
        )
        with self._lock:
            existing = self._runs.get(run.id)
            if existing is not None:  # a replay starting a child it already started
                return existing
            self._runs[run.id] = created
            self._enqueue_locked([driver])
        self._notify()
        return created

    async def set_run_version(
        self, run_id: str, version: int, *, generation: int, now: datetime
    ) -> WorkflowRun | None:
        with self._lock:
            run = self._get_run(run_id)
            if run.state in TERMINAL_RUN_STATES or run.generation != generation:
                return None
            moved = attrs.evolve(run, version=version, updated_at=now)
            self._runs[run_id] = moved
            return moved

    async def get_run(self, run_id: str) -> WorkflowRun:
        with self._lock:
            return self._get_run(run_id)

    async def list_runs(self, filter: RunFilter) -> list[WorkflowRun]:
        with self._lock:
            runs = [
                r
                for r in self._runs.values()
                if (filter.state is None or r.state is filter.state)
                and (filter.name is None or r.name == filter.name)
                and (filter.tenant is None or r.tenant == filter.tenant)
                and (filter.parent_run_id is None or r.parent_run_id == filter.parent_run_id)
                and (filter.correlation_key is None or r.correlation_key == filter.correlation_key)
            ]
        found = page(runs, lambda r: r.id, filter.order, filter.after, filter.offset, filter.limit)
        if filter.preview is None:
            return found
        return [_run_preview(run, filter.preview) for run in found]

    async def list_steps(self, run_id: str) -> list[StepRecord]:
        with self._lock:
            steps = self._steps.get(run_id, {})
            return [steps[seq] for seq in sorted(steps)]

    async def save_step(self, run_id: str, step: StepRecord, *, now: datetime) -> StepRecord:
        with self._lock:
            self._get_run(run_id)
            steps = self._steps.setdefault(run_id, {})
            old = steps.get(step.seq)
            if old is not None and old.state is not StepState.PENDING:
                return old  # a finished record is never overwritten
            steps[step.seq] = step
            return step

    async def update_run(
        self,
        run_id: str,
        *,
        state: RunState,
        now: datetime,
        expect: frozenset[RunState] | None = None,
        generation: int | None = None,
        output: object = None,
        error: str | None = None,
        wake_at: datetime | None = None,
        waiting_for: str | None = None,
        driver: NewJob | None = None,
    ) -> WorkflowRun | None:
        with self._lock:
            run = self._get_run(run_id)
            if run.state in TERMINAL_RUN_STATES if expect is None else run.state not in expect:
                return None
            if generation is not None and run.generation != generation:
                return None
            if (
                state is RunState.WAITING
                and waiting_for is not None
                and self._pending_event(run_id, waiting_for) is not None
            ):
                return None  # the event is already here: the caller takes it instead
            parking = state in (RunState.SLEEPING, RunState.WAITING)
            run = attrs.evolve(
                run,
                state=state,
                output=output,
                error=error,
                wake_at=wake_at,
                waiting_for=waiting_for,
                updated_at=now,
                finished_at=now if state in TERMINAL_RUN_STATES else run.finished_at,
                generation=run.generation + 1 if parking else run.generation,
            )
            self._runs[run_id] = run
            if driver is not None:
                self._enqueue_locked([driver])
        if driver is not None:
            self._notify()
        return run

    async def send_event(self, event: NewEvent, *, driver: NewJob, now: datetime) -> bool:
        with self._lock:
            run = self._runs.get(event.run_id)
            if run is None or run.tenant != event.tenant:
                raise RunNotFoundError(event.run_id)
            self._events.setdefault(run.id, []).append(
                WorkflowEvent(
                    id=event.id,
                    name=event.name,
                    payload=event.payload,
                    created_at=event.created_at,
                    run_id=event.run_id,
                    tenant=event.tenant,
                )
            )
            if run.state is not RunState.WAITING or run.waiting_for != event.name:
                return False
            self._runs[run.id] = attrs.evolve(
                run, state=RunState.RUNNING, waiting_for=None, wake_at=None, updated_at=now
            )
            key = f"wf:{run.id}:{run.generation}"
            job_id = self._unique.get((run.tenant, key))
            row = self._jobs.get(job_id) if job_id is not None else None
            if row is None:
                self._enqueue_locked([attrs.evolve(driver, unique_key=key)])
            elif row.state is PENDING and row.run_at > now:
                row.run_at = row.updated_at = now  # the timeout timer wakes the run now
                self._make_runnable(row, now)
        self._notify()
        return True

    async def take_event(
        self, run_id: str, name: str, *, seq: int, now: datetime
    ) -> WorkflowEvent | None:
        with self._lock:
            events = self._events.get(run_id, [])
            for ev in events:
                if ev.name == name and ev.consumed_seq == seq:
                    return ev  # a replay of the wait that consumed it
            i = self._pending_event(run_id, name)
            if i is None:
                return None
            events[i] = taken = attrs.evolve(events[i], consumed_seq=seq)
            return taken


def _run_preview(run: WorkflowRun, limit: int) -> WorkflowRun:
    """``run`` with its input and output as :class:`Truncated` when they are too long."""
    input_, output = Truncated.of(run.input, limit), Truncated.of(run.output, limit)
    if input_ is run.input and output is run.output:
        return run
    return attrs.evolve(run, input=input_, output=output)
