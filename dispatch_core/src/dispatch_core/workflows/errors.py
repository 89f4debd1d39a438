"""Errors a workflow handler, or its caller, can meet."""

from __future__ import annotations

from dispatch_core.errors import DispatchError

__all__ = [
    "WorkflowError",
    "NonDeterminismError",
    "StepFailedError",
    "ChildWorkflowFailedError",
    "EventTimeoutError",
    "WorkflowFailedError",
    "WorkflowCancelledError",
]


class WorkflowError(DispatchError):
    """A workflow was written or used in a way Dispatch cannot honour."""


class NonDeterminismError(WorkflowError):
    """A replay called the workflow's primitives in another order than its history.

    The handler must call ``wf.step``, ``wf.sleep``... in the same order each time it runs:
    branch on inputs and step results only, never on the clock, randomness or outside state.
    """

    def __init__(self, run_id: str, seq: int, expected: str, got: str) -> None:
        super().__init__(
            f"workflow run {run_id!r} is not deterministic: call #{seq} was {expected} in its "
            f"history but is {got} in this replay; branch only on inputs and step results, or "
            "start new runs on a new version"
        )
        self.run_id = run_id
        self.seq = seq


class StepFailedError(WorkflowError):
    """A step used up its attempts; ``error`` is its last error (type, message, traceback)."""

    def __init__(self, step: str, error: str) -> None:
        first = error.splitlines()[0] if error else "failed"
        super().__init__(f"step {step!r} failed: {first}")
        self.step = step
        self.error = error


class ChildWorkflowFailedError(StepFailedError):
    """A child run started by ``wf.child`` failed or was cancelled; ``error`` is its error."""

    def __init__(self, child: str, run_id: str, error: str) -> None:
        super().__init__(child, error)
        first = error.splitlines()[0] if error else "failed"
        self.args = (f"child workflow {child!r} (run {run_id!r}) failed: {first}",)
        self.run_id = run_id


class EventTimeoutError(WorkflowError, TimeoutError):
    """``wf.wait_for_event`` timed out before the event arrived."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no event {name!r} arrived before the timeout")
        self.name = name


class WorkflowFailedError(WorkflowError):
    """Raised by a run handle's ``result()`` when the run failed."""

    def __init__(self, run_id: str, error: str) -> None:
        first = error.splitlines()[0] if error else "failed"
        super().__init__(f"workflow run {run_id!r} failed: {first}")
        self.run_id = run_id
        self.error = error


class WorkflowCancelledError(WorkflowError):
    """Raised by a run handle's ``result()`` when the run was cancelled."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"workflow run {run_id!r} was cancelled")
        self.run_id = run_id
