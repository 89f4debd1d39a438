"""Durable workflows: runs replayed by jobs against a checkpointed history."""

from __future__ import annotations

from dispatch_core.workflows.models import (
    TERMINAL_RUN_STATES,
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
