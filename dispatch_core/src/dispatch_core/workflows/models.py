"""Value types of durable workflows, as the store keeps them.

A run's history is a list of :class:`StepRecord` values, one per primitive the handler called
(``wf.step``, ``wf.sleep``, ``wf.wait_for_event``...), numbered in call order (``seq``). A
replay after a crash or a park walks the handler again and takes each finished record's output
instead of running the primitive again.
"""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

from dispatch_core.models import _PREVIEW, JSON, SortOrder

__all__ = [
    "RunState",
    "StepKind",
    "StepState",
    "NewRun",
    "WorkflowRun",
    "StepRecord",
    "NewEvent",
    "WorkflowEvent",
    "RunFilter",
    "TERMINAL_RUN_STATES",
]


class RunState(enum.StrEnum):
    """Where a workflow run is in its life."""

    RUNNING = "running"
    """A driver job is (or is about to be) replaying it."""
    SLEEPING = "sleeping"
    """Parked on a durable timer (``wf.sleep``); a job wakes it at ``wake_at``."""
    WAITING = "waiting"
    """Parked until an event (``waiting_for``) arrives, or its timeout at ``wake_at``."""
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_RUN_STATES = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED})


class StepKind(enum.StrEnum):
    """Which primitive a history record comes from."""

    STEP = "step"
    SLEEP = "sleep"
    EVENT = "event"
    CHILD = "child"
    COMPENSATION = "compensation"


class StepState(enum.StrEnum):
    """A history record's state: only ``PENDING`` ones (a timer or a wait that has not
    ended) may change; finished ones are never overwritten."""

    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


@attrs.frozen(kw_only=True)
class NewRun:
    """A run to be written by ``Store.create_run``."""

    id: str
    name: str
    version: int
    input: JSON
    created_at: datetime
    tenant: str | None = None
    parent_run_id: str | None = None
    #: An application key events may be addressed to instead of the run id (an order id...).
    correlation_key: str | None = None


@attrs.frozen(kw_only=True)
class WorkflowRun:
    """A persisted workflow run."""

    id: str
    name: str
    version: int
    input: JSON
    state: RunState
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    output: JSON = None
    error: str | None = None
    tenant: str | None = None
    parent_run_id: str | None = None
    correlation_key: str | None = None
    #: When a sleeping run wakes, or a waiting one times out.
    wake_at: datetime | None = None
    #: The event name a waiting run waits for.
    waiting_for: str | None = None
    #: Times the run was parked; the driver job of park ``n`` has the unique key
    #: ``wf:<run id>:<n>``, so each park has at most one wake-up job, whoever asks for it.
    generation: int = 0


@attrs.frozen(kw_only=True)
class StepRecord:
    """One entry of a run's history."""

    seq: int
    name: str
    kind: StepKind
    state: StepState
    started_at: datetime
    finished_at: datetime | None = None
    output: JSON = None
    error: str | None = None
    attempts: int = 1
    #: For a pending sleep or event wait: when it ends (or times out).
    wake_at: datetime | None = None


@attrs.frozen(kw_only=True)
class NewEvent:
    """An event for ``Store.send_event``, addressed to one run within a tenant (the engine
    resolves a correlation key to its runs first)."""

    id: str
    run_id: str
    name: str
    payload: JSON
    created_at: datetime
    tenant: str | None = None


@attrs.frozen(kw_only=True)
class WorkflowEvent:
    """A stored event."""

    id: str
    name: str
    payload: JSON
    created_at: datetime
    run_id: str
    tenant: str | None = None
    #: The seq of the wait that consumed it, once consumed.
    consumed_seq: int | None = None


@attrs.frozen(kw_only=True)
class RunFilter:
    """Which runs ``Store.list_runs`` returns; ``None`` fields do not filter.

    Attributes:
        preview: With a number N, a run input or output whose compact JSON text is longer
            than N bytes of UTF-8 comes back as a :class:`~dispatch_core.models.Truncated`,
            as in :class:`~dispatch_core.models.JobFilter`; ``None`` (the default) returns
            them whole (``Store.get_run`` always does).
    """

    state: RunState | None = None
    name: str | None = None
    tenant: str | None = None
    parent_run_id: str | None = None
    correlation_key: str | None = None
    limit: int = 100
    offset: int = 0
    #: A keyset cursor: only runs whose id comes strictly after this one in ``order``.
    after: str | None = None
    order: SortOrder = SortOrder.DESC
    preview: int | None = attrs.field(default=None, validator=_PREVIEW)
