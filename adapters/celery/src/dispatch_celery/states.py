"""Celery's task state names, and how Dispatch job states map onto them."""

from __future__ import annotations

from dispatch_core import JobState

__all__ = [
    "PENDING",
    "RECEIVED",
    "STARTED",
    "SUCCESS",
    "FAILURE",
    "REVOKED",
    "REJECTED",
    "RETRY",
    "IGNORED",
    "READY_STATES",
    "UNREADY_STATES",
    "EXCEPTION_STATES",
    "PROPAGATE_STATES",
    "ALL_STATES",
    "from_job_state",
]

#: Waiting to run, or unknown (Celery reports an unknown id as pending too).
PENDING = "PENDING"
#: Not used by dispatch_celery (Dispatch has no "received but not started" state).
RECEIVED = "RECEIVED"
#: A worker is running it.
STARTED = "STARTED"
#: It returned; ``result`` holds the value.
SUCCESS = "SUCCESS"
#: Every attempt failed; ``result`` holds the exception.
FAILURE = "FAILURE"
#: Cancelled, or expired before it started.
REVOKED = "REVOKED"
#: Not used by dispatch_celery.
REJECTED = "REJECTED"
#: An attempt failed and the next one waits for its delay.
RETRY = "RETRY"
#: Not used by dispatch_celery.
IGNORED = "IGNORED"

READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, REJECTED, RETRY})
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED})
ALL_STATES = frozenset(
    {PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, REVOKED, REJECTED, RETRY, IGNORED}
)

_FROM_JOB_STATE = {
    JobState.PENDING: PENDING,
    JobState.RUNNING: STARTED,
    JobState.RETRYING: RETRY,
    JobState.COMPLETED: SUCCESS,
    JobState.FAILED: FAILURE,
    JobState.CANCELLED: REVOKED,
}


def from_job_state(state: JobState) -> str:
    """The Celery state name of a Dispatch job state.

    ``pending`` → ``PENDING``, ``running`` → ``STARTED``, ``retrying`` → ``RETRY``,
    ``completed`` → ``SUCCESS``, ``failed`` → ``FAILURE``, ``cancelled`` → ``REVOKED``.
    """
    return _FROM_JOB_STATE[JobState(state)]
