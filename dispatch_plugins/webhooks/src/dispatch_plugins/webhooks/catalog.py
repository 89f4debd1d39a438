"""The event catalogue: the webhook event types and the patterns endpoints subscribe with."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "CATALOG_VERSION",
    "EVENT_TYPES",
    "JOB_ENQUEUED",
    "JOB_STARTED",
    "JOB_COMPLETED",
    "JOB_FAILED",
    "JOB_RETRYING",
    "JOB_DLQ",
    "WORKFLOW_STARTED",
    "WORKFLOW_STEP_COMPLETED",
    "WORKFLOW_STEP_FAILED",
    "WORKFLOW_COMPLETED",
    "WORKFLOW_FAILED",
    "CRON_FIRED",
    "pattern_problem",
    "matches",
]

#: The version of the catalogue, sent in every envelope as ``catalog_version``.
CATALOG_VERSION = "2025-01-01"

JOB_ENQUEUED = "dispatch.job.enqueued"
JOB_STARTED = "dispatch.job.started"
JOB_COMPLETED = "dispatch.job.completed"
JOB_FAILED = "dispatch.job.failed"
JOB_RETRYING = "dispatch.job.retrying"
JOB_DLQ = "dispatch.job.dlq"
WORKFLOW_STARTED = "dispatch.workflow.started"
WORKFLOW_STEP_COMPLETED = "dispatch.workflow.step_completed"
WORKFLOW_STEP_FAILED = "dispatch.workflow.step_failed"
WORKFLOW_COMPLETED = "dispatch.workflow.completed"
WORKFLOW_FAILED = "dispatch.workflow.failed"
CRON_FIRED = "dispatch.cron.fired"

#: Every event type, in catalogue order.
EVENT_TYPES: tuple[str, ...] = (
    JOB_ENQUEUED,
    JOB_STARTED,
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_RETRYING,
    JOB_DLQ,
    WORKFLOW_STARTED,
    WORKFLOW_STEP_COMPLETED,
    WORKFLOW_STEP_FAILED,
    WORKFLOW_COMPLETED,
    WORKFLOW_FAILED,
    CRON_FIRED,
)


def _matches_one(pattern: str, event_type: str) -> bool:
    if pattern == "*" or pattern == event_type:
        return True
    return pattern.endswith(".*") and event_type.startswith(pattern[:-1])


def matches(patterns: Iterable[str], event_type: str) -> bool:
    """Whether ``event_type`` is selected by any of ``patterns``.

    A pattern is ``"*"`` (every event), an exact type (``"dispatch.job.failed"``) or a prefix
    ending in ``.*`` (``"dispatch.job.*"``, ``"dispatch.*"``).
    """
    return any(_matches_one(p, event_type) for p in patterns)


def pattern_problem(pattern: object) -> str | None:
    """Why ``pattern`` is not a valid subscription pattern, or ``None`` when it is.

    A pattern must select at least one type of the catalogue, so a typo fails at
    configuration time instead of silently selecting nothing.
    """
    if not isinstance(pattern, str) or not pattern:
        return f"{pattern!r} is not a non-empty string"
    bad_star = pattern.endswith("*") and pattern != "*" and not pattern.endswith(".*")
    if "*" in pattern[:-1] or bad_star:
        return f"{pattern!r}: '*' may only stand alone or end a pattern as '.*'"
    if not any(_matches_one(pattern, t) for t in EVENT_TYPES):
        return f"unknown event type or pattern {pattern!r}"
    return None
