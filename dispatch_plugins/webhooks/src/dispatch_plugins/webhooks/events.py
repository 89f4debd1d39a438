"""Webhook envelopes built from Dispatch lifecycle hooks.

An envelope carries ids, names, counters, timings and a one-line error: never a job's payload
or result, nor a workflow's input or output, which may hold personal data.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import attrs

from dispatch_core import Job, WorkflowRun
from dispatch_plugins.webhooks.catalog import CATALOG_VERSION

__all__ = ["Event", "job_event", "workflow_event", "cron_event", "rfc3339", "MAX_ERROR_CHARS"]

#: Errors are cut to their first line and at most this many characters (no tracebacks).
MAX_ERROR_CHARS = 1000


def rfc3339(moment: datetime) -> str:
    """``moment`` in UTC as RFC 3339 with milliseconds and a ``Z``: ``2025-01-01T12:00:00.000Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error_line(error: str | None) -> str | None:
    if error is None:
        return None
    lines = error.strip().splitlines()
    line = lines[0] if lines else ""
    return line[:MAX_ERROR_CHARS]


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


@attrs.frozen(kw_only=True)
class Event:
    """One webhook event: the envelope every endpoint subscribed to ``type`` receives.

    Attributes:
        id: Unique per event (``evt_...``); the same on every retry and every endpoint, so
            receivers can de-duplicate on it (it is also the ``Dispatch-Webhook-Id`` header).
        type: The event type, e.g. ``dispatch.job.failed``.
        created_at: When the event was recorded (UTC).
        tenant: The tenant of the job or run (``None`` for untenanted work and cron).
        data: The type's fields (see the catalogue).
        catalog_version: The catalogue version the fields follow.
    """

    id: str
    type: str
    created_at: datetime
    tenant: str | None
    data: dict[str, Any]
    catalog_version: str = CATALOG_VERSION

    @classmethod
    def new(cls, event_type: str, *, tenant: str | None, data: dict[str, Any]) -> Event:
        """A new event with a fresh id, created now."""
        return cls(
            id=f"evt_{uuid.uuid4().hex}",
            type=event_type,
            created_at=datetime.now(UTC),
            tenant=tenant,
            data=data,
        )

    def envelope(self) -> dict[str, Any]:
        """The JSON envelope sent as the request body."""
        return {
            "id": self.id,
            "type": self.type,
            "created_at": rfc3339(self.created_at),
            "catalog_version": self.catalog_version,
            "tenant": self.tenant,
            "data": self.data,
        }


def job_event(
    event_type: str,
    job: Job,
    *,
    attempt: int | None = None,
    elapsed: float | None = None,
    error: str | None = None,
    next_run_at: datetime | None = None,
) -> Event:
    """The event for a job hook: ``job_id``, ``job_name``, ``queue``, ``tenant``,
    ``attempt``, and ``elapsed_ms`` / ``error`` / ``next_run_at`` when given."""
    data: dict[str, Any] = {
        "job_id": job.id,
        "job_name": job.name,
        "queue": job.queue,
        "tenant": job.tenant,
        "attempt": job.attempt if attempt is None else attempt,
    }
    if elapsed is not None:
        data["elapsed_ms"] = _ms(elapsed)
    if error is not None:
        data["error"] = _error_line(error)
    if next_run_at is not None:
        data["next_run_at"] = rfc3339(next_run_at)
    return Event.new(event_type, tenant=job.tenant, data=data)


def workflow_event(
    event_type: str,
    run: WorkflowRun,
    *,
    step_name: str | None = None,
    elapsed: float | None = None,
    error: str | None = None,
) -> Event:
    """The event for a workflow hook: ``run_id``, ``name``, ``version``, ``tenant``, and
    ``step_name`` / ``elapsed_ms`` / ``error`` when given."""
    data: dict[str, Any] = {
        "run_id": run.id,
        "name": run.name,
        "version": run.version,
        "tenant": run.tenant,
    }
    if step_name is not None:
        data["step_name"] = step_name
    if elapsed is not None:
        data["elapsed_ms"] = _ms(elapsed)
    if error is not None:
        data["error"] = _error_line(error)
    return Event.new(event_type, tenant=run.tenant, data=data)


def cron_event(event_type: str, entry_name: str, job_id: str) -> Event:
    """The event for a cron fire: ``entry_name`` and ``job_id`` (cron has no tenant)."""
    return Event.new(event_type, tenant=None, data={"entry_name": entry_name, "job_id": job_id})
