"""Producing, inspection and control: enqueue, reading and counting jobs, cancel and retry."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from dispatch_core.errors import InvalidTransitionError, JobIdTakenError, JobNotFoundError
from dispatch_core.models import Job, JobFilter, NewJob, RunnableCount, ThroughputBucket
from dispatch_core.states import JobState, check_transition
from dispatch_core.storekit import STORE_SECTIONS, job_from_new
from dispatch_plugins.sqlite.codec import (
    JOB_COLUMNS,
    JOB_SELECT,
    decode_job,
    dump_json,
    from_us,
    to_us,
)
from dispatch_plugins.sqlite.connection import write_transaction
from dispatch_plugins.sqlite.ops.common import (
    LEASE_FREE,
    RUNNABLE,
    chunks,
    insert_job,
    insert_jobs,
    jobs_by_unique_key,
    keyset_page,
    list_previewed,
    marks,
    where_equal,
)

__all__ = [*STORE_SECTIONS["jobs"]]

# -- producing -----------------------------------------------------------------------------------


def enqueue(conn: sqlite3.Connection, jobs: Sequence[NewJob]) -> list[Job]:
    """Insert ``jobs`` in one transaction; a ``unique_key`` taken in the job's tenant yields
    the existing job. A taken id raises :class:`JobIdTakenError` and writes nothing."""
    if not jobs:
        return []
    try:
        if len(jobs) == 1 and jobs[0].unique_key is None:
            insert_job(conn, jobs[0])  # one statement: one transaction
            return [job_from_new(jobs[0])]
        keys = list({(j.tenant, j.unique_key): None for j in jobs if j.unique_key is not None})
        with write_transaction(conn):
            insert_jobs(conn, jobs, keyed=bool(keys))
            holders = jobs_by_unique_key(conn, keys) if keys else {}
    except sqlite3.IntegrityError as exc:
        taken = _taken_id(conn, jobs, exc)
        if taken is None:
            raise
        raise JobIdTakenError(taken) from exc
    # A job with a unique key is whichever row holds the key in its tenant (ours, or the one
    # that was there).
    return [
        job_from_new(new) if new.unique_key is None else holders[new.tenant, new.unique_key]
        for new in jobs
    ]


def _taken_id(
    conn: sqlite3.Connection, jobs: Sequence[NewJob], exc: sqlite3.IntegrityError
) -> str | None:
    """After a failed (rolled back) insert of ``jobs``: the first id that a row the job does
    not dedupe with holds, or ``None`` when ``exc`` is not about ids."""
    if "jobs.id" not in str(exc):
        return None
    ids = list({j.id: None for j in jobs})
    held: dict[str, tuple[str | None, str | None]] = {}
    for chunk in chunks(ids):
        sql = f"SELECT id, tenant, unique_key FROM jobs WHERE id IN ({marks(len(chunk))})"
        held.update((i, (t, k)) for i, t, k in conn.execute(sql, chunk))
    seen: dict[str, tuple[str | None, str | None]] = {}
    for new in jobs:
        scope = (new.tenant, new.unique_key)
        holder = held.get(new.id, seen.get(new.id))
        # An equal keyed row is the one this job dedupes to; anything else is a clash.
        if holder is not None and (new.unique_key is None or holder != scope):
            return new.id
        seen.setdefault(new.id, scope)
    return None


# -- inspection and control ----------------------------------------------------------------------

_GET_JOB = f"SELECT {JOB_SELECT} FROM jobs WHERE id = ?"


def get_job(conn: sqlite3.Connection, job_id: str) -> Job:
    """See :meth:`dispatch_core.store.Store.get_job`."""
    row = conn.execute(_GET_JOB, (job_id,)).fetchone()
    if row is None:
        raise JobNotFoundError(job_id)
    return decode_job(row)


# The bodies a listing with previews cuts short.
_JOB_BODIES = ("payload", "result")


def list_jobs(conn: sqlite3.Connection, filter: JobFilter) -> list[Job]:
    """See :meth:`dispatch_core.store.Store.list_jobs`."""
    conditions, params = where_equal(
        (
            ("state", None if filter.state is None else filter.state.value),
            ("queue", filter.queue),
            ("name", filter.name),
            ("tenant", filter.tenant),
        )
    )
    if filter.preview is not None:
        return list_previewed(
            conn, "jobs", JOB_COLUMNS, _JOB_BODIES, decode_job, filter, conditions, params
        )
    sql, params = keyset_page(
        f"SELECT {JOB_SELECT} FROM jobs",
        conditions,
        params,
        after=filter.after,
        order=filter.order,
        limit=filter.limit,
        offset=filter.offset,
    )
    return [decode_job(row) for row in conn.execute(sql, params).fetchall()]


# One statement (one snapshot), one branch per partial index, each read from its index alone:
# a plain GROUP BY state would read every row of the table, payloads and results included, for
# a figure the dashboard asks for every two seconds. The branches split the jobs by state; the
# last relies on every terminal state being written with its finished_at (cancel, fail,
# complete and rescue all stamp it; only a retry, which leaves the terminal states, clears it).
_COUNT_JOBS = f"""
SELECT state, count(*) FROM jobs WHERE {RUNNABLE}{{filters}} GROUP BY state
UNION ALL
SELECT state, count(*) FROM jobs WHERE state = 'running'{{filters}} GROUP BY state
UNION ALL
SELECT state, count(*) FROM jobs
WHERE finished_at IS NOT NULL AND state IN ('completed', 'failed', 'cancelled'){{filters}}
GROUP BY state
"""


def count_jobs(
    conn: sqlite3.Connection, *, queue: str | None = None, tenant: str | None = None
) -> dict[JobState, int]:
    """See :meth:`dispatch_core.store.Store.count_jobs`."""
    conditions, params = where_equal((("queue", queue), ("tenant", tenant)))
    filters = "".join(f" AND {c}" for c in conditions)
    rows = conn.execute(_COUNT_JOBS.format(filters=filters), params * 3)
    return {JobState(state): n for state, n in rows.fetchall()}


# A read (never a write lock: it does not hold up claims in other processes). It walks
# jobs_claim_idx, the runnable rows only, and reads nothing else: the index covers queue,
# name, tenant and run_at. The exclusions are one JSON array, however many names. GROUP BY
# and ORDER BY use the BINARY collation: by code point, the order Python sorts strings in.
_COUNT_RUNNABLE = f"""
SELECT queue, name, count(*) FROM jobs
WHERE {RUNNABLE} AND run_at <= :now{{tenant}}
  AND name NOT IN (SELECT value FROM json_each(:excluded))
GROUP BY queue, name ORDER BY queue, name
"""


def count_runnable(
    conn: sqlite3.Connection,
    *,
    now: datetime,
    tenant: str | None = None,
    exclude_names: Collection[str] = (),
) -> list[RunnableCount]:
    """See :meth:`dispatch_core.store.Store.count_runnable`."""
    params: dict[str, Any] = {"now": to_us(now), "excluded": dump_json(sorted(exclude_names))}
    if tenant is not None:
        params["tenant"] = tenant
    sql = _COUNT_RUNNABLE.format(tenant="" if tenant is None else " AND tenant = :tenant")
    return [
        RunnableCount(queue=queue, name=name, count=n)
        for queue, name, n in conn.execute(sql, params).fetchall()
    ]


# Times are integer microseconds, so a bucket is an integer division (exact, and the same as
# the floor for every time after 1970). jobs_finished_idx (state, finished_at, queue, tenant)
# serves the range: one seek per state, and it covers every filter.
_THROUGHPUT = """
SELECT finished_at / :size AS slot,
       count(*) FILTER (WHERE state = 'completed'),
       count(*) FILTER (WHERE state = 'failed')
FROM jobs
WHERE state IN ('completed', 'failed') AND finished_at >= :since{filters}
GROUP BY slot ORDER BY slot
"""


def throughput(
    conn: sqlite3.Connection,
    *,
    since: datetime,
    bucket_seconds: int,
    queue: str | None = None,
    tenant: str | None = None,
) -> list[ThroughputBucket]:
    """See :meth:`dispatch_core.store.Store.throughput`."""
    filters = ""
    params: dict[str, Any] = {"size": bucket_seconds * 1_000_000, "since": to_us(since)}
    for column, value in (("queue", queue), ("tenant", tenant)):
        if value is not None:
            filters += f" AND {column} = :{column}"
            params[column] = value
    rows = conn.execute(_THROUGHPUT.format(filters=filters), params).fetchall()
    return [
        ThroughputBucket(start=from_us(slot * params["size"]), completed=done, failed=failed)
        for slot, done, failed in rows
    ]


def _current_state(conn: sqlite3.Connection, job_id: str) -> JobState:
    row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise JobNotFoundError(job_id)
    return JobState(row[0])


_CANCEL = f"""
UPDATE jobs SET state = 'cancelled', finished_at = ?, updated_at = ?, {LEASE_FREE}
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
