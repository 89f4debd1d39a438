"""Every store operation as a plain function of a ``sqlite3`` connection.

The async :class:`~dispatch_plugins.sqlite.store.SQLiteStore` runs these functions on its
aiosqlite connection's thread (one thread hop per operation, however many statements it runs);
the blocking :class:`~dispatch_plugins.sqlite.sync.SQLiteSyncStore` calls them directly. So the
SQL and the row decoding exist once.

Connections are in autocommit mode: a lone statement is its own transaction; several writes
that must land together run inside :func:`~dispatch_plugins.sqlite.connection.write_transaction`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from dispatch_core._ids import new_id
from dispatch_core.errors import DLQEntryNotFoundError, InvalidTransitionError, JobNotFoundError
from dispatch_core.models import DLQEntry, Job, JobFilter, NewJob, Outcome, OutcomeKind
from dispatch_core.states import JobState, check_transition
from dispatch_plugins.sqlite.codec import (
    DLQ_SELECT,
    JOB_SELECT,
    claim_order,
    decode_dlq,
    decode_job,
    dump_json_opt,
    from_us_opt,
    job_from_new,
    new_job_params,
    to_us,
)
from dispatch_plugins.sqlite.connection import write_transaction

__all__ = [
    "enqueue",
    "claim",
    "heartbeat",
    "finish",
    "rescue_expired",
    "next_run_at",
    "get_job",
    "list_jobs",
    "count_jobs",
    "cancel",
    "retry",
    "list_dlq",
    "get_dlq",
    "replay_dlq",
    "purge_dlq",
]

# Rows per statement when a batch is spread over placeholders. Three placeholders a row stays
# under 999, the smallest SQLITE_MAX_VARIABLE_NUMBER a build may have.
_CHUNK = 300

_RUNNABLE = "state IN ('pending', 'retrying')"  # must match the partial indexes' WHERE
_LEASE_FREE = "worker_id = NULL, attempt_token = NULL, lease_expires_at = NULL"
# Fencing: a write about an attempt lands only while that attempt holds the job.
_FENCE = "id = ? AND attempt_token = ? AND state = 'running'"


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _filters(
    queues: Collection[str] | None, names: Collection[str] | None
) -> tuple[str, list[str]]:
    """SQL conditions (each starting with AND) and parameters for queue and name filters."""
    sql = ""
    params: list[str] = []
    if queues is not None:
        sql += f" AND queue IN ({_marks(len(queues))})"
        params.extend(queues)
    if names is not None:
        sql += f" AND name IN ({_marks(len(names))})"
        params.extend(names)
    return sql, params


# -- producing -----------------------------------------------------------------------------------

INSERT_JOB = """
INSERT INTO jobs (id, name, queue, payload, state, priority, attempt, max_attempts, timeout,
                  run_at, created_at, updated_at, unique_key, tenant, headers)
VALUES (?, ?, ?, ?, 'pending', ?, 0, ?, ?, ?, ?, ?, ?, ?, ?)
"""
# A taken unique key skips the row; the caller then reads the row that holds the key.
_INSERT_JOB_UNLESS_KEY_TAKEN = (
    INSERT_JOB + "ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING\n"
)


def enqueue(conn: sqlite3.Connection, jobs: Sequence[NewJob]) -> list[Job]:
    """Insert ``jobs`` in one transaction; a taken ``unique_key`` yields the existing job."""
    if not jobs:
        return []
    if len(jobs) == 1 and jobs[0].unique_key is None:
        conn.execute(INSERT_JOB, new_job_params(jobs[0]))  # one statement: its own transaction
        return [job_from_new(jobs[0])]
    keys = list({j.unique_key: None for j in jobs if j.unique_key is not None})
    # Without unique keys the upsert clause is dead weight (~5% of a bulk insert).
    sql = _INSERT_JOB_UNLESS_KEY_TAKEN if keys else INSERT_JOB
    with write_transaction(conn):
        conn.executemany(sql, map(new_job_params, jobs))
        holders = _jobs_by_unique_key(conn, keys) if keys else {}
    # A job with a unique key is whichever row holds the key (ours, or the one that was there).
    return [
        job_from_new(new) if new.unique_key is None else holders[new.unique_key] for new in jobs
    ]


def _jobs_by_unique_key(conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, Job]:
    found: dict[str, Job] = {}
    for chunk in _chunks(keys):
        rows = conn.execute(
            f"SELECT {JOB_SELECT} FROM jobs WHERE unique_key IN ({_marks(len(chunk))})", chunk
        ).fetchall()
        for row in rows:
            job = decode_job(row)
            assert job.unique_key is not None
            found[job.unique_key] = job
    return found


# -- the worker's hot path -----------------------------------------------------------------------


@lru_cache(maxsize=64)
def _claim_sql(n_queues: int | None, n_names: int | None) -> str:
    queue_filter = "" if n_queues is None else f" AND queue IN ({_marks(n_queues)})"
    name_filter = "" if n_names is None else f" AND name IN ({_marks(n_names)})"
    # One statement: SQLite has a single writer, so two connections (or processes) running it
    # at once are serialised and never take the same row.
    return f"""
    UPDATE jobs
    SET state = 'running', attempt = attempt + 1, worker_id = ?,
        attempt_token = lower(hex(randomblob(8))),
        started_at = ?, lease_expires_at = ?, updated_at = ?
    WHERE id IN (
        SELECT id FROM jobs
        WHERE {_RUNNABLE} AND run_at <= ?{queue_filter}{name_filter}
        ORDER BY priority DESC, run_at, id
        LIMIT ?
    )
    RETURNING {JOB_SELECT}
    """


def claim(
    conn: sqlite3.Connection,
    *,
    worker_id: str,
    queues: Collection[str] | None,
    names: Collection[str] | None,
    limit: int,
    lease_seconds: float,
    now: datetime,
) -> list[Job]:
    """See :meth:`dispatch_core.store.Store.claim`."""
    if limit <= 0 or (queues is not None and not queues) or (names is not None and not names):
        return []
    now_us = to_us(now)
    lease_us = to_us(now + timedelta(seconds=lease_seconds))
    sql = _claim_sql(None if queues is None else len(queues), None if names is None else len(names))
    params: list[Any] = [worker_id, now_us, lease_us, now_us, now_us]
    if queues is not None:
        params.extend(queues)
    if names is not None:
        params.extend(names)
    params.append(limit)
    jobs = [decode_job(row) for row in conn.execute(sql, params).fetchall()]
    jobs.sort(key=claim_order)  # RETURNING order is not guaranteed
    return jobs


@lru_cache(maxsize=64)
def _heartbeat_sql(n: int) -> str:
    return f"""
    UPDATE jobs SET lease_expires_at = ?, updated_at = ?
    FROM (VALUES {", ".join(["(?, ?)"] * n)}) AS lease
    WHERE jobs.id = lease.column1 AND jobs.attempt_token = lease.column2
      AND jobs.state = 'running'
    RETURNING jobs.id
    """


def heartbeat(
    conn: sqlite3.Connection,
    *,
    leases: Mapping[str, str],
    lease_seconds: float,
    now: datetime,
) -> set[str]:
    """See :meth:`dispatch_core.store.Store.heartbeat`."""
    if not leases:
        return set()
    until_us = to_us(now + timedelta(seconds=lease_seconds))
    now_us = to_us(now)
    kept: set[str] = set()
    items = list(leases.items())
    for chunk in _chunks(items):
        params: list[Any] = [until_us, now_us]
        for job_id, token in chunk:
            params += (job_id, token)
        kept.update(r[0] for r in conn.execute(_heartbeat_sql(len(chunk)), params).fetchall())
    return set(leases) - kept


@lru_cache(maxsize=64)
def _complete_many_sql(n: int) -> str:
    return f"""
    UPDATE jobs SET state = 'completed', result = done.column3, finished_at = ?,
        updated_at = ?, {_LEASE_FREE}
    FROM (VALUES {", ".join(["(?, ?, ?)"] * n)}) AS done
    WHERE jobs.id = done.column1 AND jobs.attempt_token = done.column2
      AND jobs.state = 'running'
    RETURNING jobs.id
    """


_COMPLETE_ONE = f"""
UPDATE jobs SET state = 'completed', result = ?, finished_at = ?, updated_at = ?, {_LEASE_FREE}
WHERE {_FENCE}
"""
_RETRY_ONE = f"""
UPDATE jobs SET state = 'retrying', last_error = ?, run_at = ?, updated_at = ?, {_LEASE_FREE}
WHERE {_FENCE}
"""
_FAIL_ONE = f"""
UPDATE jobs SET state = 'failed', last_error = ?, finished_at = ?, updated_at = ?, {_LEASE_FREE}
WHERE {_FENCE}
"""
_RELEASE_ONE = f"""
UPDATE jobs SET state = 'pending', attempt = max(attempt - 1, 0), run_at = min(run_at, ?),
    updated_at = ?, {_LEASE_FREE}
WHERE {_FENCE}
"""
# Copies the job row as it is now (failed, attempts counted) into the dead-letter queue.
_DEAD_LETTER = """
INSERT INTO dlq (id, job_id, name, queue, payload, error, attempts, max_attempts, priority,
                 timeout, tenant, headers, failed_at)
SELECT ?, id, name, queue, payload, ?, attempt, max_attempts, priority, timeout, tenant,
       headers, ?
FROM jobs WHERE id = ?
"""


def finish(conn: sqlite3.Connection, outcomes: Sequence[Outcome], *, now: datetime) -> list[bool]:
    """See :meth:`dispatch_core.store.Store.finish`."""
    if not outcomes:
        return []
    now_us = to_us(now)
    ids = [o.job_id for o in outcomes]
    if len(set(ids)) == len(ids) and all(o.kind is OutcomeKind.COMPLETED for o in outcomes):
        # The common case: one UPDATE ... FROM (VALUES ...) for the whole batch.
        if len(outcomes) <= _CHUNK:
            done = _complete_many(conn, outcomes, now_us)
        else:
            with write_transaction(conn):
                done = set()
                for chunk in _chunks(outcomes):
                    done |= _complete_many(conn, chunk, now_us)
        return [job_id in done for job_id in ids]
    # Mixed kinds (or one job twice): one statement per outcome, in order, in one transaction,
    # so a failure and its dead-letter entry land together.
    with write_transaction(conn):
        return [_finish_one(conn, o, now_us) for o in outcomes]


def _complete_many(conn: sqlite3.Connection, outcomes: Sequence[Outcome], now_us: int) -> set[str]:
    params: list[Any] = [now_us, now_us]
    for o in outcomes:
        params += (o.job_id, o.attempt_token, dump_json_opt(o.result))
    rows = conn.execute(_complete_many_sql(len(outcomes)), params).fetchall()
    return {r[0] for r in rows}


def _finish_one(conn: sqlite3.Connection, o: Outcome, now_us: int) -> bool:
    fence = (o.job_id, o.attempt_token)
    if o.kind is OutcomeKind.COMPLETED:
        cur = conn.execute(_COMPLETE_ONE, (dump_json_opt(o.result), now_us, now_us, *fence))
    elif o.kind is OutcomeKind.RETRY:
        run_at = now_us if o.run_at is None else to_us(o.run_at)
        cur = conn.execute(_RETRY_ONE, (o.error, run_at, now_us, *fence))
    elif o.kind is OutcomeKind.FAIL:
        cur = conn.execute(_FAIL_ONE, (o.error, now_us, now_us, *fence))
        if cur.rowcount == 1:
            conn.execute(_DEAD_LETTER, (new_id("dlq"), o.error or "", now_us, o.job_id))
    else:  # RELEASE: back to pending without consuming the attempt
        cur = conn.execute(_RELEASE_ONE, (now_us, now_us, *fence))
    return cur.rowcount == 1


_RESCUE_CHECK = "SELECT 1 FROM jobs WHERE state = 'running' AND lease_expires_at < ? LIMIT 1"
# In SET, every column reference reads the row as it was before the update.
_RESCUE = f"""
UPDATE jobs SET
    state = CASE WHEN attempt >= max_attempts THEN 'failed' ELSE 'retrying' END,
    run_at = CASE WHEN attempt >= max_attempts THEN run_at ELSE :now END,
    finished_at = CASE WHEN attempt >= max_attempts THEN :now ELSE finished_at END,
    last_error = 'lease expired: worker ' || coalesce(worker_id, 'None')
                 || ' stopped heartbeating',
    updated_at = :now, {_LEASE_FREE}
WHERE state = 'running' AND lease_expires_at < :now
RETURNING {JOB_SELECT}
"""


def rescue_expired(conn: sqlite3.Connection, *, now: datetime) -> list[Job]:
    """See :meth:`dispatch_core.store.Store.rescue_expired`."""
    now_us = to_us(now)
    if conn.execute(_RESCUE_CHECK, (now_us,)).fetchone() is None:
        return []  # the usual case, answered without taking the write lock
    with write_transaction(conn):
        rescued = [decode_job(row) for row in conn.execute(_RESCUE, {"now": now_us}).fetchall()]
        dead = [
            (new_id("dlq"), j.last_error, now_us, j.id)
            for j in rescued
            if j.state is JobState.FAILED
        ]
        if dead:
            conn.executemany(_DEAD_LETTER, dead)
    rescued.sort(key=lambda j: j.id)
    return rescued


def next_run_at(
    conn: sqlite3.Connection, *, queues: Collection[str] | None, names: Collection[str] | None
) -> datetime | None:
    """See :meth:`dispatch_core.store.Store.next_run_at`."""
    if (queues is not None and not queues) or (names is not None and not names):
        return None
    where, params = _filters(queues, names)
    row = conn.execute(f"SELECT min(run_at) FROM jobs WHERE {_RUNNABLE}{where}", params).fetchone()
    return from_us_opt(row[0])


# -- inspection and control ----------------------------------------------------------------------

_GET_JOB = f"SELECT {JOB_SELECT} FROM jobs WHERE id = ?"


def get_job(conn: sqlite3.Connection, job_id: str) -> Job:
    """See :meth:`dispatch_core.store.Store.get_job`."""
    row = conn.execute(_GET_JOB, (job_id,)).fetchone()
    if row is None:
        raise JobNotFoundError(job_id)
    return decode_job(row)


def list_jobs(conn: sqlite3.Connection, filter: JobFilter) -> list[Job]:
    """See :meth:`dispatch_core.store.Store.list_jobs`."""
    conditions: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("state", None if filter.state is None else filter.state.value),
        ("queue", filter.queue),
        ("name", filter.name),
        ("tenant", filter.tenant),
    ):
        if value is not None:
            conditions.append(f"{column} = ?")
            params.append(value)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    params += (filter.limit, filter.offset)
    rows = conn.execute(
        f"SELECT {JOB_SELECT} FROM jobs {where} ORDER BY id DESC LIMIT ? OFFSET ?", params
    ).fetchall()
    return [decode_job(row) for row in rows]


def count_jobs(conn: sqlite3.Connection, *, queue: str | None = None) -> dict[JobState, int]:
    """See :meth:`dispatch_core.store.Store.count_jobs`."""
    if queue is None:
        rows = conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
    else:
        rows = conn.execute(
            "SELECT state, count(*) FROM jobs WHERE queue = ? GROUP BY state", (queue,)
        ).fetchall()
    return {JobState(state): n for state, n in rows}


def _current_state(conn: sqlite3.Connection, job_id: str) -> JobState:
    row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise JobNotFoundError(job_id)
    return JobState(row[0])


_CANCEL = f"""
UPDATE jobs SET state = 'cancelled', finished_at = ?, updated_at = ?, {_LEASE_FREE}
WHERE id = ?
RETURNING {JOB_SELECT}
"""


def cancel(conn: sqlite3.Connection, job_id: str, *, now: datetime) -> Job:
    """See :meth:`dispatch_core.store.Store.cancel`."""
    now_us = to_us(now)
    with write_transaction(conn):
        check_transition(job_id, _current_state(conn, job_id), JobState.CANCELLED)
        row = conn.execute(_CANCEL, (now_us, now_us, job_id)).fetchone()
    return decode_job(row)


_RETRY = f"""
UPDATE jobs SET state = 'pending', attempt = 0, run_at = ?, updated_at = ?, finished_at = NULL,
    last_error = NULL
WHERE id = ?
RETURNING {JOB_SELECT}
"""


def retry(conn: sqlite3.Connection, job_id: str, *, now: datetime) -> Job:
    """See :meth:`dispatch_core.store.Store.retry`."""
    now_us = to_us(now)
    with write_transaction(conn):
        state = _current_state(conn, job_id)
        check_transition(job_id, state, JobState.PENDING)
        if state is JobState.RUNNING:
            # RUNNING -> PENDING is the shutdown release, never a manual retry.
            raise InvalidTransitionError(job_id, "running", "pending", "the job is running")
        row = conn.execute(_RETRY, (now_us, now_us, job_id)).fetchone()
    return decode_job(row)


# -- the dead-letter queue -----------------------------------------------------------------------


def list_dlq(
    conn: sqlite3.Connection, *, queue: str | None = None, limit: int = 100, offset: int = 0
) -> list[DLQEntry]:
    """See :meth:`dispatch_core.store.Store.list_dlq`."""
    where, params = ("", []) if queue is None else ("WHERE queue = ?", [queue])
    rows = conn.execute(
        f"SELECT {DLQ_SELECT} FROM dlq {where} ORDER BY failed_at, id LIMIT ? OFFSET ?",
        [*params, limit, offset],
    ).fetchall()
    return [decode_dlq(row) for row in rows]


def _get_dlq(conn: sqlite3.Connection, entry_id: str) -> DLQEntry:
    row = conn.execute(f"SELECT {DLQ_SELECT} FROM dlq WHERE id = ?", (entry_id,)).fetchone()
    if row is None:
        raise DLQEntryNotFoundError(entry_id)
    return decode_dlq(row)


def get_dlq(conn: sqlite3.Connection, entry_id: str) -> DLQEntry:
    """See :meth:`dispatch_core.store.Store.get_dlq`."""
    return _get_dlq(conn, entry_id)


def replay_dlq(conn: sqlite3.Connection, entry_id: str, *, new_job_id: str, now: datetime) -> Job:
    """See :meth:`dispatch_core.store.Store.replay_dlq`."""
    with write_transaction(conn):
        entry = _get_dlq(conn, entry_id)
        new = entry.replay_as(job_id=new_job_id, now=now)
        conn.execute(INSERT_JOB, new_job_params(new))
        conn.execute(
            "UPDATE dlq SET replayed_at = ?, replay_job_id = ? WHERE id = ?",
            (to_us(now), new_job_id, entry_id),
        )
    return job_from_new(new)


def purge_dlq(conn: sqlite3.Connection, *, before: datetime) -> int:
    """See :meth:`dispatch_core.store.Store.purge_dlq`."""
    return conn.execute("DELETE FROM dlq WHERE failed_at < ?", (to_us(before),)).rowcount
