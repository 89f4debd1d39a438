"""The job state machine: one transition table that every store enforces."""

from __future__ import annotations

import enum

from dispatch_core.errors import InvalidTransitionError

__all__ = ["JobState", "TRANSITIONS", "TERMINAL_STATES", "RUNNABLE_STATES", "check_transition"]


class JobState(enum.StrEnum):
    """Where a job is in its life."""

    PENDING = "pending"
    """Waiting to run (first attempt, or released by a shutdown, or retried by hand)."""
    RUNNING = "running"
    """Claimed by a worker that holds its lease."""
    RETRYING = "retrying"
    """Failed an attempt and waits for its backoff to pass before the next one."""
    COMPLETED = "completed"
    """The handler returned."""
    FAILED = "failed"
    """Every attempt failed; a dead-letter entry holds it."""
    CANCELLED = "cancelled"
    """Cancelled before it completed."""


#: state -> the states it may move to. Nothing else is legal.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.RETRYING: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.RUNNING: frozenset(
        {
            JobState.COMPLETED,
            JobState.RETRYING,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.PENDING,  # released by a shutdown without consuming the attempt
        }
    ),
    JobState.FAILED: frozenset({JobState.PENDING}),  # retried by hand
    JobState.CANCELLED: frozenset({JobState.PENDING}),  # retried by hand
    JobState.COMPLETED: frozenset(),
}

TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
RUNNABLE_STATES = frozenset({JobState.PENDING, JobState.RETRYING})


def check_transition(job_id: str, current: JobState, target: JobState) -> None:
    """Raise :class:`InvalidTransitionError` unless ``current -> target`` is legal."""
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[current])) or "nothing"
        raise InvalidTransitionError(
            job_id, current.value, target.value, f"from {current.value} it may go to {allowed}"
        )
