"""How values are stored: times as integer microseconds, JSON as text; rows back to models.

Times are ``INTEGER`` microseconds since the Unix epoch (UTC) so that comparisons in the claim
query are plain integer comparisons; they come back as timezone-aware UTC datetimes. A naive
datetime handed to the store is taken to be UTC.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from dispatch_core.models import JSON, DLQEntry, Job, NewJob
from dispatch_core.states import JobState

__all__ = [
    "JOB_COLUMNS",
    "JOB_SELECT",
    "DLQ_COLUMNS",
    "DLQ_SELECT",
    "Row",
    "to_us",
    "from_us",
    "from_us_opt",
    "dump_json_opt",
    "new_job_params",
    "job_from_new",
    "decode_job",
    "decode_dlq",
    "claim_order",
]

Row = Sequence[Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
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

_decode = json.JSONDecoder().decode


def _make_encoder() -> Callable[[Any], str]:
    """The fastest compact JSON encoder available.

    ``JSONEncoder.encode`` builds a new C encoder on every call (about 1 us for a small payload,
    a tenth of a bulk insert per row); build the C encoder once instead, when the interpreter
    has it and it agrees with the pure-Python path.
    """
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
    portable = encoder.encode
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return portable
    try:
        # markers=None skips the circularity check: payloads are JSON trees by construction.
        chunks = make(
            None,
            encoder.default,
            json.encoder.encode_basestring,
            None,
            ":",
            ",",
            False,
            False,
            True,
        )
        fast: Callable[[Any], str] = lambda value: "".join(chunks(value, 0))  # noqa: E731
        sample = {"a": [1, 2.5, None, True, "é\n"], "b": {"c": -1e300}}
        if fast(sample) != portable(sample):
            return portable
    except Exception:  # a future interpreter changed the private signature
        return portable
    return fast


_encode = _make_encoder()


def to_us(value: datetime) -> int:
    """Microseconds since the epoch, exactly (no float rounding)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _US


def from_us(value: int) -> datetime:
    """A timezone-aware UTC datetime from microseconds since the epoch."""
    return _EPOCH + _US * value  # twice as fast as timedelta(microseconds=value)


def from_us_opt(value: int | None) -> datetime | None:
    """:func:`from_us`, passing ``None`` through."""
    return None if value is None else _EPOCH + _US * value


def dump_json_opt(value: JSON) -> str | None:
    """JSON text, or SQL ``NULL`` for ``None`` (results and empty headers are stored as NULL)."""
    return None if value is None else _encode(value)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_job_params(new: NewJob) -> tuple[Any, ...]:
    """Parameters for :data:`~dispatch_plugins.sqlite.operations.INSERT_JOB`."""
    created = to_us(new.created_at)
    return (
        new.id,
        new.name,
        new.queue,
        _encode(new.payload),
        new.priority,
        new.max_attempts,
        new.timeout,
        to_us(new.run_at),
        created,
        created,
        new.unique_key,
        new.tenant,
        _encode(new.headers) if new.headers else None,
    )


def job_from_new(new: NewJob) -> Job:
    """The job a successful insert of ``new`` stored, built without reading it back."""
    created = _utc(new.created_at)
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
        run_at=_utc(new.run_at),
        created_at=created,
        updated_at=created,
        unique_key=new.unique_key,
        tenant=new.tenant,
        headers=dict(new.headers),
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
    epoch, us = _EPOCH, _US
    return Job(
        id=id_,
        name=name,
        queue=queue,
        payload=_decode(payload),
        state=_STATES[state],
        priority=priority,
        attempt=attempt,
        max_attempts=max_attempts,
        timeout=timeout,
        run_at=epoch + us * run_at,
        created_at=epoch + us * created_at,
        updated_at=epoch + us * updated_at,
        started_at=None if started_at is None else epoch + us * started_at,
        finished_at=None if finished_at is None else epoch + us * finished_at,
        last_error=last_error,
        unique_key=unique_key,
        tenant=tenant,
        headers={} if headers is None else _decode(headers),
        result=None if result is None else _decode(result),
        worker_id=worker_id,
        attempt_token=attempt_token,
        lease_expires_at=None if lease_expires_at is None else epoch + us * lease_expires_at,
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
        payload=_decode(payload),
        error=error,
        attempts=attempts,
        max_attempts=max_attempts,
        priority=priority,
        timeout=timeout,
        tenant=tenant,
        headers={} if headers is None else _decode(headers),
        failed_at=from_us(failed_at),
        replayed_at=from_us_opt(replayed_at),
        replay_job_id=replay_job_id,
    )


def claim_order(job: Job) -> tuple[int, datetime, str]:
    """Sort key of the claim order: priority descending, then run_at, then id."""
    return (-job.priority, job.run_at, job.id)
