"""How values travel: JSON encoded once in Python, times as ``timestamptz``; rows to models.

psycopg hands back typed values (``str``, ``int``, ``float``, ``datetime``, parsed ``jsonb``), so
decoding a row is mostly building the model. Times come back timezone-aware in the session's
time zone and are normalised to UTC; a naive datetime handed to the store is taken to be UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from dispatch_core.cluster import WorkerInfo, WorkerState
from dispatch_core.cron import CronEntry, MisfirePolicy
from dispatch_core.errors import PayloadError
from dispatch_core.models import JSON, DLQEntry, Job, NewJob
from dispatch_core.queues import QueueConfig
from dispatch_core.states import JobState
from dispatch_core.storekit import as_utc, compact_json
from dispatch_core.workflows.models import (
    NewRun,
    RunState,
    StepKind,
    StepRecord,
    StepState,
    WorkflowEvent,
    WorkflowRun,
)

__all__ = [
    "JOB_COLUMNS",
    "JOB_SELECT",
    "DLQ_COLUMNS",
    "DLQ_SELECT",
    "INSERT_COLUMNS",
    "COPY_COLUMNS",
    "COPY_TYPES",
    "Row",
    "aware",
    "to_utc",
    "encode_json",
    "encode_payload",
    "encode_result",
    "clean_text",
    "new_job_params",
    "new_job_columns",
    "copy_row",
    "decode_job",
    "decode_dlq",
    "WORKER_COLUMNS",
    "WORKER_SELECT",
    "CRON_COLUMNS",
    "CRON_SELECT",
    "worker_params",
    "decode_worker",
    "cron_params",
    "decode_cron",
    "decode_queue_config",
    "RUN_COLUMNS",
    "RUN_SELECT",
    "STEP_COLUMNS",
    "STEP_SELECT",
    "EVENT_COLUMNS",
    "EVENT_SELECT",
    "encode_input",
    "run_from_new",
    "decode_run",
    "step_params",
    "decode_step",
    "decode_event",
]

Row = Sequence[Any]

# A dict lookup is twenty times cheaper than calling the enum; decoding is on the hot path.
_STATES = {state.value: state for state in JobState}

#: Column order of every job row this package reads; :func:`decode_job` relies on it.
JOB_COLUMNS = (
    "id",
    "name",
    "queue",
    "payload",
    "state",
    "priority",
    "attempt",
    "max_attempts",
    "timeout",
    "run_at",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "last_error",
    "unique_key",
    "tenant",
    "headers",
    "result",
    "worker_id",
    "attempt_token",
    "lease_expires_at",
)
JOB_SELECT = ", ".join(JOB_COLUMNS)

#: Column order of every dead-letter row this package reads; :func:`decode_dlq` relies on it.
DLQ_COLUMNS = (
    "id",
    "job_id",
    "name",
    "queue",
    "payload",
    "error",
    "attempts",
    "max_attempts",
    "priority",
    "timeout",
    "tenant",
    "headers",
    "failed_at",
    "replayed_at",
    "replay_job_id",
)
DLQ_SELECT = ", ".join(DLQ_COLUMNS)

#: The columns an enqueue writes (state and attempt take their defaults), in the order of
#: :func:`new_job_params`, :func:`new_job_columns` and :func:`copy_row`.
INSERT_COLUMNS = (
    "id",
    "name",
    "queue",
    "payload",
    "priority",
    "max_attempts",
    "timeout",
    "run_at",
    "created_at",
    "updated_at",
    "unique_key",
    "tenant",
    "headers",
)
COPY_COLUMNS = INSERT_COLUMNS
#: Binary COPY wire types of :data:`COPY_COLUMNS`. The jsonb columns travel as ``bytea``: the
#: binary form of jsonb is a version byte (1) followed by the JSON text, which
#: :func:`copy_row` writes as raw bytes, so psycopg's jsonb dumper (which would encode the
#: already-encoded text a second time) is not involved.
COPY_TYPES = (
    "text",
    "text",
    "text",
    "bytea",
    "int4",
    "int4",
    "float8",
    "timestamptz",
    "timestamptz",
    "timestamptz",
    "text",
    "text",
    "bytea",
)


#: Compact JSON text of a JSON value (the text every store writes).
encode_json = compact_json

# jsonb (like text) cannot hold the NUL character, which JSON text escapes as \u0000. The
# substring test is a cheap filter; _has_nul() then decides on the value itself (the text of
# a literal backslash followed by "u0000" contains the substring too).
_NUL_ESCAPE = "\\u0000"


def _has_nul(value: JSON) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def _without_nul(value: JSON) -> JSON:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value


def encode_payload(new: NewJob) -> str:
    """The payload's JSON text.

    Raises:
        PayloadError: a string in the payload holds the NUL character, which PostgreSQL's
            jsonb cannot store.
    """
    text = encode_json(new.payload)
    if _NUL_ESCAPE in text and _has_nul(new.payload):
        raise PayloadError(
            new.name,
            ["a string holds the NUL character (\\u0000), which PostgreSQL cannot store @ $"],
        )
    return text


def encode_result(value: JSON) -> str | None:
    """A result's JSON text (``None`` for SQL NULL). NUL characters, which jsonb cannot store,
    become U+FFFD: one odd result must not make a whole batch of outcomes fail."""
    if value is None:
        return None
    text = encode_json(value)
    if _NUL_ESCAPE in text and _has_nul(value):
        text = encode_json(_without_nul(value))
    return text


def clean_text(value: str | None) -> str | None:
    """``value`` with NUL characters (which a text column cannot hold) written as ``\\x00``."""
    if value is None or "\x00" not in value:
        return value
    return value.replace("\x00", "\\x00")


def aware(value: datetime) -> datetime:
    """``value`` as a timezone-aware datetime: a naive one is taken to be UTC.

    psycopg sends a naive datetime as ``timestamp`` (no zone), which PostgreSQL would read in
    the session's time zone; the store's contract is UTC.
    """
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def to_utc(value: datetime) -> datetime:
    """A timezone-aware datetime read from the database, in UTC (usually already so: the
    store's connections use the UTC session time zone)."""
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def new_job_params(new: NewJob) -> tuple[Any, ...]:
    """Parameters of a one-row insert, in :data:`INSERT_COLUMNS` order."""
    created = aware(new.created_at)
    return (
        new.id,
        new.name,
        new.queue,
        encode_payload(new),
        new.priority,
        new.max_attempts,
        new.timeout,
        aware(new.run_at),
        created,
        created,
        new.unique_key,
        new.tenant,
        encode_json(new.headers) if new.headers else None,
    )


def new_job_columns(jobs: Sequence[NewJob]) -> dict[str, list[Any]]:
    """One array per column of :data:`INSERT_COLUMNS` (``updated_at`` excepted: it is
    ``created_at``), for ``INSERT ... SELECT FROM unnest(...)``."""
    created = [aware(j.created_at) for j in jobs]
    return {
        "id": [j.id for j in jobs],
        "name": [j.name for j in jobs],
        "queue": [j.queue for j in jobs],
        "payload": [encode_payload(j) for j in jobs],
        "priority": [j.priority for j in jobs],
        "max_attempts": [j.max_attempts for j in jobs],
        "timeout": [j.timeout for j in jobs],
        "run_at": [aware(j.run_at) for j in jobs],
        "created_at": created,
        "unique_key": [j.unique_key for j in jobs],
        "tenant": [j.tenant for j in jobs],
        "headers": [encode_json(j.headers) if j.headers else None for j in jobs],
    }


def copy_row(new: NewJob) -> tuple[Any, ...]:
    """A binary COPY row for :data:`COPY_COLUMNS` (see :data:`COPY_TYPES`)."""
    created = aware(new.created_at)
    return (
        new.id,
        new.name,
        new.queue,
        b"\x01" + encode_payload(new).encode(),
        new.priority,
        new.max_attempts,
        new.timeout,
        aware(new.run_at),
        created,
        created,
        new.unique_key,
        new.tenant,
        b"\x01" + encode_json(new.headers).encode() if new.headers else None,
    )


def decode_job(row: Row) -> Job:
    """Build a :class:`Job` from a row selected with :data:`JOB_SELECT`."""
    (
        id_,
        name,
        queue,
        payload,
        state,
        priority,
        attempt,
        max_attempts,
        timeout,
        run_at,
        created_at,
        updated_at,
        started_at,
        finished_at,
        last_error,
        unique_key,
        tenant,
        headers,
        result,
        worker_id,
        attempt_token,
        lease_expires_at,
    ) = row
    return Job(
        id=id_,
        name=name,
        queue=queue,
        payload=payload,
        state=_STATES[state],
        priority=priority,
        attempt=attempt,
        max_attempts=max_attempts,
        timeout=timeout,
        run_at=to_utc(run_at),
        created_at=to_utc(created_at),
        updated_at=to_utc(updated_at),
        started_at=None if started_at is None else to_utc(started_at),
        finished_at=None if finished_at is None else to_utc(finished_at),
        last_error=last_error,
        unique_key=unique_key,
        tenant=tenant,
        headers={} if headers is None else headers,
        result=result,
        worker_id=worker_id,
        attempt_token=attempt_token,
        lease_expires_at=None if lease_expires_at is None else to_utc(lease_expires_at),
    )


def decode_dlq(row: Row) -> DLQEntry:
    """Build a :class:`DLQEntry` from a row selected with :data:`DLQ_SELECT`."""
    (
        id_,
        job_id,
        name,
        queue,
        payload,
        error,
        attempts,
        max_attempts,
        priority,
        timeout,
        tenant,
        headers,
        failed_at,
        replayed_at,
        replay_job_id,
    ) = row
    return DLQEntry(
        id=id_,
        job_id=job_id,
        name=name,
        queue=queue,
        payload=payload,
        error=error,
        attempts=attempts,
        max_attempts=max_attempts,
        priority=priority,
        timeout=timeout,
        tenant=tenant,
        headers={} if headers is None else headers,
        failed_at=to_utc(failed_at),
        replayed_at=None if replayed_at is None else to_utc(replayed_at),
        replay_job_id=replay_job_id,
    )


#: Column order of every worker row this package writes and reads.
WORKER_COLUMNS = (
    "id",
    "hostname",
    "pid",
    "queues",
    "concurrency",
    "version",
    "started_at",
    "last_seen",
    "state",
    "names",  # migration 5
)
WORKER_SELECT = ", ".join(WORKER_COLUMNS)

#: Column order of every cron row this package writes and reads.
CRON_COLUMNS = (
    "name",
    "expr",
    "timezone",
    "job_name",
    "payload",
    "queue",
    "misfire",
    "misfire_grace",
    "enabled",
    "next_run_at",
    "last_run_at",
    "last_job_id",
    "created_at",
    "updated_at",
)
CRON_SELECT = ", ".join(CRON_COLUMNS)


def worker_params(worker: WorkerInfo) -> dict[str, Any]:
    """Named parameters of a worker row (:data:`WORKER_COLUMNS`)."""
    return {
        "id": worker.id,
        "hostname": worker.hostname,
        "pid": worker.pid,
        "queues": None if worker.queues is None else list(worker.queues),
        "concurrency": worker.concurrency,
        "version": worker.version,
        "started_at": aware(worker.started_at),
        "last_seen": aware(worker.last_seen),
        "state": worker.state.value,
        "names": None if worker.names is None else list(worker.names),
    }


def decode_worker(row: Row, leader: bool = False) -> WorkerInfo:
    """Build a :class:`WorkerInfo` from a row selected with :data:`WORKER_SELECT`."""
    id_, hostname, pid, queues, concurrency, version, started_at, last_seen, state, names = row
    return WorkerInfo(
        id=id_,
        hostname=hostname,
        pid=pid,
        queues=None if queues is None else tuple(queues),
        concurrency=concurrency,
        version=version,
        started_at=to_utc(started_at),
        last_seen=to_utc(last_seen),
        state=WorkerState(state),
        leader=leader,
        names=None if names is None else tuple(names),
    )


def cron_params(entry: CronEntry) -> tuple[Any, ...]:
    """Parameters of a cron row, in :data:`CRON_COLUMNS` order (the payload as JSON text)."""
    return (
        entry.name,
        entry.expr,
        entry.timezone,
        entry.job_name,
        encode_result(entry.payload) or "null",
        entry.queue,
        entry.misfire.value,
        float(entry.misfire_grace),
        entry.enabled,
        aware(entry.next_run_at),
        None if entry.last_run_at is None else aware(entry.last_run_at),
        entry.last_job_id,
        aware(entry.created_at),
        aware(entry.updated_at),
    )


def decode_cron(row: Row) -> CronEntry:
    """Build a :class:`CronEntry` from a row selected with :data:`CRON_SELECT`."""
    (
        name,
        expr,
        timezone,
        job_name,
        payload,
        queue,
        misfire,
        misfire_grace,
        enabled,
        next_run_at,
        last_run_at,
        last_job_id,
        created_at,
        updated_at,
    ) = row
    return CronEntry(
        name=name,
        expr=expr,
        timezone=timezone,
        job_name=job_name,
        payload=payload,
        queue=queue,
        misfire=MisfirePolicy(misfire),
        misfire_grace=misfire_grace,
        enabled=enabled,
        next_run_at=to_utc(next_run_at),
        last_run_at=None if last_run_at is None else to_utc(last_run_at),
        last_job_id=last_job_id,
        created_at=to_utc(created_at),
        updated_at=to_utc(updated_at),
    )


def decode_queue_config(row: Row) -> QueueConfig | None:
    """The limits of a ``queues`` row (``name, configured, concurrency, rate, burst,
    per_tenant``), or ``None`` when none were set (a row made by a pause only)."""
    name, configured, concurrency, rate, burst, per_tenant = row[:6]
    if not configured:
        return None
    return QueueConfig(
        name=name, concurrency=concurrency, rate=rate, burst=burst, per_tenant=per_tenant
    )


# -- durable workflows ------------------------------------------------------------------------

#: Column order of every workflow run row this package reads; :func:`decode_run` relies on it.
RUN_COLUMNS = (
    "id",
    "name",
    "version",
    "input",
    "state",
    "created_at",
    "updated_at",
    "finished_at",
    "output",
    "error",
    "tenant",
    "parent_run_id",
    "correlation_key",
    "wake_at",
    "waiting_for",
    "generation",
)
RUN_SELECT = ", ".join(RUN_COLUMNS)

#: Column order of every history row this package reads (``run_id`` aside);
#: :func:`decode_step` relies on it.
STEP_COLUMNS = (
    "seq",
    "name",
    "kind",
    "state",
    "started_at",
    "finished_at",
    "output",
    "error",
    "attempts",
    "wake_at",
)
STEP_SELECT = ", ".join(STEP_COLUMNS)

#: Column order of every event row this package reads; :func:`decode_event` relies on it.
EVENT_COLUMNS = ("id", "name", "payload", "created_at", "run_id", "tenant", "consumed_seq")
EVENT_SELECT = ", ".join(EVENT_COLUMNS)

_RUN_STATES = {state.value: state for state in RunState}
_STEP_KINDS = {kind.value: kind for kind in StepKind}
_STEP_STATES = {state.value: state for state in StepState}


def encode_input(value: JSON, owner: str) -> str:
    """The JSON text of a value a caller hands in (a run's input, an event's payload).

    Raises:
        PayloadError: a string in it holds the NUL character, which PostgreSQL's jsonb cannot
            store (``owner``, the workflow or event name, is named in the message).
    """
    text = encode_json(value)
    if _NUL_ESCAPE in text and _has_nul(value):
        raise PayloadError(
            owner,
            ["a string holds the NUL character (\\u0000), which PostgreSQL cannot store @ $"],
        )
    return text


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else to_utc(value)


def run_from_new(new: NewRun) -> WorkflowRun:
    """The run a successful insert of ``new`` stored, built without reading it back."""
    created = as_utc(new.created_at)
    return WorkflowRun(
        id=new.id,
        name=new.name,
        version=new.version,
        input=new.input,
        state=RunState.RUNNING,
        created_at=created,
        updated_at=created,
        tenant=new.tenant,
        parent_run_id=new.parent_run_id,
        correlation_key=new.correlation_key,
    )


def decode_run(row: Row) -> WorkflowRun:
    """Build a :class:`WorkflowRun` from a row selected with :data:`RUN_SELECT`."""
    (
        id_,
        name,
        version,
        input_,
        state,
        created_at,
        updated_at,
        finished_at,
        output,
        error,
        tenant,
        parent_run_id,
        correlation_key,
        wake_at,
        waiting_for,
        generation,
    ) = row
    return WorkflowRun(
        id=id_,
        name=name,
        version=version,
        input=input_,
        state=_RUN_STATES[state],
        created_at=to_utc(created_at),
        updated_at=to_utc(updated_at),
        finished_at=_utc_or_none(finished_at),
        output=output,
        error=error,
        tenant=tenant,
        parent_run_id=parent_run_id,
        correlation_key=correlation_key,
        wake_at=_utc_or_none(wake_at),
        waiting_for=waiting_for,
        generation=generation,
    )


def step_params(run_id: str, step: StepRecord) -> dict[str, Any]:
    """Named parameters of a history row: ``run_id`` and :data:`STEP_COLUMNS` (the output as
    JSON text, ``None`` for null)."""
    return {
        "run_id": run_id,
        "seq": step.seq,
        "name": step.name,
        "kind": step.kind.value,
        "state": step.state.value,
        "started_at": aware(step.started_at),
        "finished_at": None if step.finished_at is None else aware(step.finished_at),
        "output": encode_result(step.output),
        "error": clean_text(step.error),
        "attempts": step.attempts,
        "wake_at": None if step.wake_at is None else aware(step.wake_at),
    }


def decode_step(row: Row) -> StepRecord:
    """Build a :class:`StepRecord` from a row selected with :data:`STEP_SELECT`."""
    seq, name, kind, state, started_at, finished_at, output, error, attempts, wake_at = row
    return StepRecord(
        seq=seq,
        name=name,
        kind=_STEP_KINDS[kind],
        state=_STEP_STATES[state],
        started_at=to_utc(started_at),
        finished_at=_utc_or_none(finished_at),
        output=output,
        error=error,
        attempts=attempts,
        wake_at=_utc_or_none(wake_at),
    )


def decode_event(row: Row) -> WorkflowEvent:
    """Build a :class:`WorkflowEvent` from a row selected with :data:`EVENT_SELECT`."""
    id_, name, payload, created_at, run_id, tenant, consumed_seq = row
    return WorkflowEvent(
        id=id_,
        name=name,
        payload=payload,
        created_at=to_utc(created_at),
        run_id=run_id,
        tenant=tenant,
        consumed_seq=consumed_seq,
    )
