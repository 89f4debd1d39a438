"""Value types of the cluster: the worker registry and its states.

Every worker process writes one row to its store when it starts, refreshes it with each
heartbeat and marks it stopped when it exits. The leader marks a row dead when its heartbeats
stop, and rescues the jobs the dead worker held.
"""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

__all__ = ["WorkerInfo", "WorkerState"]


class WorkerState(enum.StrEnum):
    """Where a worker process is in its life, as its row in the store says."""

    RUNNING = "running"
    """Heart-beating."""
    STOPPED = "stopped"
    """Exited cleanly (its jobs were finished or given back)."""
    DEAD = "dead"
    """Stopped heart-beating; the leader rescued its jobs. A late heartbeat revives it."""


@attrs.frozen(kw_only=True)
class WorkerInfo:
    """One worker process, as registered in the store."""

    #: TypeID ``wkr_…``.
    id: str
    hostname: str
    pid: int
    #: The queues it takes jobs from; ``None`` means every queue.
    queues: tuple[str, ...] | None
    concurrency: int
    #: The dispatch-core version it runs.
    version: str
    started_at: datetime
    #: Time of its last heartbeat (its registration, at first).
    last_seen: datetime
    state: WorkerState = WorkerState.RUNNING
    #: Whether it held the leader lease when the row was read (filled in by ``list_workers``).
    leader: bool = False
    #: The job names it runs (those it claims), sorted; ``None``: not reported (a worker of an
    #: older version). Operators compare it with the names of waiting jobs.
    names: tuple[str, ...] | None = None
