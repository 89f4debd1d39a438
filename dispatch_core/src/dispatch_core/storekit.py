"""What a store author needs, from one public module.

A store plugin implements :class:`~dispatch_core.store.Store` (and, optionally,
:class:`~dispatch_core.store.SyncStore`) over the value types of :mod:`dispatch_core.models`,
and proves it with :mod:`dispatch_core.testing`'s conformance suite. This module gathers the
rest: ids, URL redaction, the compact JSON text every store writes, and the values every
store builds the same way. Plugins import these from here, never from core's private modules.

Example::

    from dispatch_core.storekit import compact_json, job_from_new, new_id, redact_url
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from dispatch_core._ids import new_id, new_token
from dispatch_core._json import make_json_encoder
from dispatch_core._urls import redact_url
from dispatch_core.models import Job, NewJob, Truncated
from dispatch_core.states import JobState

__all__ = [
    "new_id",
    "new_token",
    "redact_url",
    "make_json_encoder",
    "compact_json",
    "job_from_new",
    "claim_order",
    "as_utc",
    "Truncated",
    "STORE_SECTIONS",
    "STORE_OPERATIONS",
]

#: The operations of the store contract (:class:`~dispatch_core.store.Store`), by the section
#: each store's ``ops/<section>.py`` module holds them in (see ``docs/internals.md``). Stores
#: build their modules' ``__all__`` from it, so the map is written once.
STORE_SECTIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "jobs": (
            "enqueue",
            "get_job",
            "list_jobs",
            "count_jobs",
            "count_runnable",
            "throughput",
            "cancel",
            "retry",
        ),
        "claim": ("claim", "heartbeat", "finish", "rescue_expired", "next_run_at"),
        "dlq": ("list_dlq", "count_dlq", "get_dlq", "replay_dlq", "purge_dlq"),
        "cluster": (
            "register_worker",
            "deregister_worker",
            "list_workers",
            "acquire_leadership",
            "release_leadership",
            "get_leader",
            "upsert_cron",
            "list_cron",
            "get_cron",
            "set_cron_enabled",
            "fire_cron",
            "delete_cron",
            "set_queue",
            "pause_queue",
            "list_queues",
            "prune",
        ),
        "workflows": (
            "create_run",
            "get_run",
            "list_runs",
            "list_steps",
            "save_step",
            "update_run",
            "set_run_version",
            "send_event",
            "take_event",
        ),
    }
)
#: Every operation of the store contract, in section order.
STORE_OPERATIONS: tuple[str, ...] = tuple(op for ops in STORE_SECTIONS.values() for op in ops)


#: Compact JSON text as the stores write payloads, results, headers and inputs.
compact_json: Callable[[Any], str] = make_json_encoder()


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def job_from_new(new: NewJob) -> Job:
    """The pending job a store holds once it wrote ``new``: built without reading it back."""
    created = as_utc(new.created_at)
    return Job(
        id=new.id,
        name=new.name,
        queue=new.queue,
        payload=new.payload,
        state=JobState.PENDING,
        priority=new.priority,
        attempt=0,
        max_attempts=new.max_attempts,
        timeout=new.timeout,
        run_at=as_utc(new.run_at),
        created_at=created,
        updated_at=created,
        unique_key=new.unique_key,
        tenant=new.tenant,
        headers=dict(new.headers),
    )


def claim_order(job: Job) -> tuple[int, datetime, str]:
    """The sort key of the claim order: priority descending, then ``run_at``, then id."""
    return (-job.priority, job.run_at, job.id)
