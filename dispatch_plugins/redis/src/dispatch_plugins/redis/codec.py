"""Conversions between Dispatch's values and what the scripts take and return.

Hashes hold strings: times as integer microseconds since the Unix epoch, JSON values (payloads,
results, headers, run inputs and outputs) as compact JSON text, and a ``None`` as an absent
field. Script arguments encode an optional string as ``""`` (``None``) or ``"=" + value``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from dispatch_core.cluster import WorkerInfo, WorkerState
from dispatch_core.cron import CronEntry, MisfirePolicy
from dispatch_core.models import DLQEntry, Job, NewJob
from dispatch_core.queues import QueueConfig
from dispatch_core.states import JobState
from dispatch_core.storekit import compact_json
from dispatch_core.workflows.models import (
    NewEvent,
    NewRun,
    RunState,
    StepKind,
    StepRecord,
    StepState,
    WorkflowEvent,
    WorkflowRun,
)

__all__ = [
    "us",
    "from_us",
    "opt",
    "dumps",
    "as_dict",
    "job_args",
    "job_from",
    "dlq_from",
    "worker_args",
    "worker_from",
    "cron_args",
    "cron_from",
    "queue_config_from",
    "run_pairs",
    "run_from",
    "step_json",
    "step_from",
    "event_json",
    "event_from",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def us(dt: datetime) -> str:
    """``dt`` as integer microseconds since the epoch (a naive ``dt`` is taken as UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return str((dt - _EPOCH) // _US)


def from_us(raw: str | bytes | int) -> datetime:
    """The UTC time of integer microseconds since the epoch (as :func:`us` writes it)."""
    return _EPOCH + timedelta(microseconds=int(raw))


def _opt_time(raw: str | None) -> datetime | None:
    return None if raw is None else from_us(raw)


def opt(value: str | None) -> str:
    """An optional string as a script argument."""
    return "" if value is None else "=" + value


#: A JSON value as the hashes hold it: compact text, non-ASCII characters as they are.
dumps = compact_json


def _opt_json(value: Any) -> str:
    return "" if value is None else "=" + dumps(value)


def _loads(raw: str | None) -> Any:
    return None if raw is None else json.loads(raw)


def as_dict(flat: Sequence[Any]) -> dict[str, str]:
    """An ``HGETALL`` reply (a flat list) as a dict."""
    it = iter(flat)
    return dict(zip(it, it, strict=True))


# -- jobs ----------------------------------------------------------------------------------------


def job_args(jobs: Iterable[NewJob]) -> list[str]:
    """The 12 script arguments of each new job."""
    out: list[str] = []
    for j in jobs:
        out += (
            j.id,
            j.name,
            j.queue,
            dumps(j.payload),
            str(j.priority),
            str(j.max_attempts),
            "" if j.timeout is None else "=" + repr(float(j.timeout)),
            us(j.run_at),
            us(j.created_at),
            opt(j.unique_key),
            opt(j.tenant),
            "=" + dumps(j.headers) if j.headers else "",
        )
    return out


def job_from(flat: Sequence[Any] | Mapping[str, str]) -> Job:
    """The job of a job hash (a dict, or an ``HGETALL`` reply)."""
    h = flat if isinstance(flat, Mapping) else as_dict(flat)
    g = h.get
    timeout = g("timeout")
    headers = g("headers")
    return Job(
        id=h["id"],
        name=h["name"],
        queue=h["queue"],
        payload=json.loads(h["payload"]),
        state=JobState(h["state"]),
        priority=int(h["priority"]),
        attempt=int(h["attempt"]),
        max_attempts=int(h["max_attempts"]),
        timeout=None if timeout is None else float(timeout),
        run_at=from_us(h["run_at"]),
        created_at=from_us(h["created_at"]),
        updated_at=from_us(h["updated_at"]),
        started_at=_opt_time(g("started_at")),
        finished_at=_opt_time(g("finished_at")),
        last_error=g("last_error"),
        unique_key=g("unique_key"),
        tenant=g("tenant"),
        headers=json.loads(headers) if headers else {},
        result=_loads(g("result")),
        worker_id=g("worker_id"),
        attempt_token=g("attempt_token"),
        lease_expires_at=_opt_time(g("lease_expires_at")),
    )


def dlq_from(flat: Sequence[Any]) -> DLQEntry:
    """The dead-letter entry of an entry hash (an ``HGETALL`` reply)."""
    h = as_dict(flat)
    g = h.get
    timeout = g("timeout")
    headers = g("headers")
    return DLQEntry(
        id=h["id"],
        job_id=h["job_id"],
        name=h["name"],
        queue=h["queue"],
        payload=json.loads(h["payload"]),
        error=h["error"],
        attempts=int(h["attempts"]),
        max_attempts=int(h["max_attempts"]),
        priority=int(h["priority"]),
        timeout=None if timeout is None else float(timeout),
        tenant=g("tenant"),
        headers=json.loads(headers) if headers else {},
        failed_at=from_us(h["failed_at"]),
        replayed_at=_opt_time(g("replayed_at")),
        replay_job_id=g("replay_job_id"),
    )


# -- workers -------------------------------------------------------------------------------------


def worker_args(w: WorkerInfo, *, last_seen: datetime | None = None) -> list[str]:
    """A worker row: its id and start time, then field/value pairs."""
    out = [
        w.id,
        us(w.started_at),
        "hostname",
        w.hostname,
        "pid",
        str(w.pid),
        "concurrency",
        str(w.concurrency),
        "version",
        w.version,
        "last_seen",
        us(last_seen or w.last_seen),
        "state",
        w.state.value if last_seen is None else WorkerState.RUNNING.value,
    ]
    if w.queues is not None:
        out += ("queues", dumps(list(w.queues)))
    if w.names is not None:
        out += ("names", dumps(list(w.names)))  # absent (rows of older versions): None
    return out


def worker_from(flat: Sequence[Any], leader: str) -> WorkerInfo:
    """The worker of a worker row; ``leader`` is the lease holder's id (``""``: none)."""
    h = as_dict(flat)
    queues = h.get("queues")
    names = h.get("names")
    return WorkerInfo(
        id=h["id"],
        hostname=h["hostname"],
        pid=int(h["pid"]),
        queues=None if queues is None else tuple(json.loads(queues)),
        concurrency=int(h["concurrency"]),
        version=h["version"],
        started_at=from_us(h["started_at"]),
        last_seen=from_us(h["last_seen"]),
        state=WorkerState(h["state"]),
        leader=bool(leader) and leader == h["id"],
        names=None if names is None else tuple(json.loads(names)),
    )


# -- cron ----------------------------------------------------------------------------------------


def cron_args(e: CronEntry) -> list[str]:
    """The 14 script arguments of a cron entry."""
    return [
        e.name,
        e.expr,
        e.timezone,
        e.job_name,
        dumps(e.payload),
        opt(e.queue),
        e.misfire.value,
        repr(float(e.misfire_grace)),
        "1" if e.enabled else "0",
        us(e.next_run_at),
        "" if e.last_run_at is None else "=" + us(e.last_run_at),
        opt(e.last_job_id),
        us(e.created_at),
        us(e.updated_at),
    ]


def cron_from(flat: Sequence[Any]) -> CronEntry:
    """The cron entry of an entry hash (an ``HGETALL`` reply)."""
    h = as_dict(flat)
    g = h.get
    return CronEntry(
        name=h["name"],
        expr=h["expr"],
        timezone=h["timezone"],
        job_name=h["job_name"],
        payload=json.loads(h["payload"]),
        queue=g("queue"),
        misfire=MisfirePolicy(h["misfire"]),
        misfire_grace=float(h["misfire_grace"]),
        enabled=h["enabled"] == "1",
        next_run_at=from_us(h["next_run_at"]),
        last_run_at=_opt_time(g("last_run_at")),
        last_job_id=g("last_job_id"),
        created_at=from_us(h["created_at"]),
        updated_at=from_us(h["updated_at"]),
    )


def queue_config_from(name: str, flat: Sequence[Any]) -> QueueConfig | None:
    """The limits of a queue row, or ``None`` when it has none."""
    h = as_dict(flat)
    conc, rate, burst = h.get("concurrency"), h.get("rate"), h.get("burst")
    if conc is None and rate is None:
        return None
    return QueueConfig(
        name=name,
        concurrency=None if conc is None else int(conc),
        rate=None if rate is None else float(rate),
        burst=None if burst is None else int(burst),
        per_tenant=h.get("per_tenant") == "1",
    )


# -- workflows -----------------------------------------------------------------------------------


def run_pairs(run: NewRun) -> list[str]:
    """A new run's hash, as field/value pairs (absent optional fields left out)."""
    out = [
        "id",
        run.id,
        "name",
        run.name,
        "version",
        str(run.version),
        "input",
        dumps(run.input),
        "state",
        RunState.RUNNING.value,
        "created_at",
        us(run.created_at),
        "updated_at",
        us(run.created_at),
        "generation",
        "0",
    ]
    for field, value in (
        ("tenant", run.tenant),
        ("parent_run_id", run.parent_run_id),
        ("correlation_key", run.correlation_key),
    ):
        if value is not None:
            out += (field, value)
    return out


def run_from(flat: Sequence[Any]) -> WorkflowRun:
    """The workflow run of a run hash (an ``HGETALL`` reply)."""
    h = as_dict(flat)
    g = h.get
    return WorkflowRun(
        id=h["id"],
        name=h["name"],
        version=int(h["version"]),
        input=json.loads(h["input"]),
        state=RunState(h["state"]),
        created_at=from_us(h["created_at"]),
        updated_at=from_us(h["updated_at"]),
        finished_at=_opt_time(g("finished_at")),
        output=_loads(g("output")),
        error=g("error"),
        tenant=g("tenant"),
        parent_run_id=g("parent_run_id"),
        correlation_key=g("correlation_key"),
        wake_at=_opt_time(g("wake_at")),
        waiting_for=g("waiting_for"),
        generation=int(h["generation"]),
    )


def opt_json(value: Any) -> str:
    """An optional JSON value as a script argument (``None`` is absent)."""
    return _opt_json(value)


def step_json(step: StepRecord) -> str:
    """A step record as the JSON text the steps hash holds (after its state)."""
    return dumps(
        {
            "seq": step.seq,
            "name": step.name,
            "kind": step.kind.value,
            "state": step.state.value,
            "started_at": us(step.started_at),
            "finished_at": None if step.finished_at is None else us(step.finished_at),
            "output": step.output,
            "error": step.error,
            "attempts": step.attempts,
            "wake_at": None if step.wake_at is None else us(step.wake_at),
        }
    )


def step_from(raw: str) -> StepRecord:
    """The step record of a steps hash value: its state, a newline, then its JSON."""
    d = json.loads(raw.partition("\n")[2])
    return StepRecord(
        seq=int(d["seq"]),
        name=d["name"],
        kind=StepKind(d["kind"]),
        state=StepState(d["state"]),
        started_at=from_us(d["started_at"]),
        finished_at=_opt_time(d["finished_at"]),
        output=d["output"],
        error=d["error"],
        attempts=int(d["attempts"]),
        wake_at=_opt_time(d["wake_at"]),
    )


def event_json(event: NewEvent) -> str:
    """An event as the JSON text the events hash holds."""
    return dumps(
        {
            "id": event.id,
            "name": event.name,
            "payload": event.payload,
            "created_at": us(event.created_at),
            "run_id": event.run_id,
            "tenant": event.tenant,
        }
    )


def event_from(raw: str, consumed_seq: int) -> WorkflowEvent:
    """The event of its JSON text, consumed by the step ``consumed_seq``."""
    d = json.loads(raw)
    return WorkflowEvent(
        id=d["id"],
        name=d["name"],
        payload=d["payload"],
        created_at=from_us(d["created_at"]),
        run_id=d["run_id"],
        tenant=d["tenant"],
        consumed_seq=consumed_seq,
    )
