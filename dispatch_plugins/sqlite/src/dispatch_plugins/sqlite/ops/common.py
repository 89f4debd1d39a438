"""What several sections of the store share: batching, filters, pages, previews, job inserts.

The statements here are the ones more than one section runs (a job insert: enqueue, a replay,
a cron tick, a workflow's driver; a worker's row: registration and the heartbeat), each beside
the helper that runs it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any, TypeVar, cast

import attrs

from dispatch_core.cluster import WorkerInfo
from dispatch_core.models import DLQEntry, DLQFilter, Job, JobFilter, NewJob, SortOrder
from dispatch_core.storekit import Truncated
from dispatch_core.workflows.models import RunFilter, WorkflowRun
from dispatch_plugins.sqlite.codec import (
    JOB_SELECT,
    WORKER_COLUMNS,
    WORKER_SELECT,
    decode_job,
    new_job_params,
    worker_params,
)
from dispatch_plugins.sqlite.schema import KEY_SCOPE

__all__ = [
    "CHUNK",
    "RUNNABLE",
    "LEASE_FREE",
    "INSERT_JOB",
    "Key",
    "chunks",
    "marks",
    "where_equal",
    "keyset_page",
    "insert_job",
    "insert_jobs",
    "jobs_by_unique_key",
    "upsert_worker",
    "preview_select",
    "list_previewed",
]

# Rows per statement when a batch is spread over placeholders. Three placeholders a row stays
# under 999, the smallest SQLITE_MAX_VARIABLE_NUMBER a build may have.
CHUNK = 300

RUNNABLE = "state IN ('pending', 'retrying')"  # must match the partial indexes' WHERE
LEASE_FREE = "worker_id = NULL, attempt_token = NULL, lease_expires_at = NULL"


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    """``items`` in slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def marks(n: int) -> str:
    """``n`` comma-separated ``?`` placeholders."""
    return ", ".join("?" * n)


def where_equal(equal: Iterable[tuple[str, object]]) -> tuple[list[str], list[Any]]:
    """``column = ?`` conditions and their parameters for the pairs whose value is given."""
    conditions: list[str] = []
    params: list[Any] = []
    for column, value in equal:
        if value is not None:
            conditions.append(f"{column} = ?")
            params.append(value)
    return conditions, params


def keyset_page(
    select: str,
    conditions: list[str],
    params: list[Any],
    *,
    after: str | None,
    order: SortOrder,
    limit: int,
    offset: int,
) -> tuple[str, list[Any]]:
    """A keyset page by id: ``select`` with ``conditions``, strictly past the cursor ``after``
    in ``order``. The cursor is a range on the id, so the primary key (or an index ending in
    the id, after equality on its other columns) is read in order from the cursor on."""
    desc = order is SortOrder.DESC
    conditions = list(conditions)
    params = list(params)
    if after is not None:
        conditions.append("id < ?" if desc else "id > ?")
        params.append(after)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    sql = f"{select}{where} ORDER BY id {'DESC' if desc else 'ASC'} LIMIT ? OFFSET ?"
    return sql, [*params, limit, offset]


# -- writing jobs, as several sections do -------------------------------------------------------

INSERT_JOB = """
INSERT INTO jobs (id, name, queue, payload, state, priority, attempt, max_attempts, timeout,
                  run_at, created_at, updated_at, unique_key, tenant, headers)
VALUES (?, ?, ?, ?, 'pending', ?, 0, ?, ?, ?, ?, ?, ?, ?, ?)
"""
# A unique key taken in the job's tenant skips the row; the caller then reads the row that
# holds the key. A taken id (a chosen one another tenant's job has) still fails the insert.
_INSERT_JOB_UNLESS_KEY_TAKEN = (
    INSERT_JOB + f"ON CONFLICT (unique_key, {KEY_SCOPE}) WHERE unique_key IS NOT NULL DO NOTHING\n"
)

#: A unique key in its scope: (tenant, key).
Key = tuple[str | None, str]


def insert_jobs(conn: sqlite3.Connection, jobs: Iterable[NewJob], *, keyed: bool) -> None:
    """Insert ``jobs`` with one ``executemany``, inside the caller's transaction when several
    writes must land together. ``keyed``: some carry a unique key, and one taken in the job's
    tenant skips the row (without keys the upsert clause is dead weight, ~5% of a bulk
    insert)."""
    sql = _INSERT_JOB_UNLESS_KEY_TAKEN if keyed else INSERT_JOB
    conn.executemany(sql, map(new_job_params, jobs))


def insert_job(conn: sqlite3.Connection, job: NewJob) -> None:
    """Insert one job inside the caller's transaction; a unique key taken in the job's tenant
    skips it."""
    sql = INSERT_JOB if job.unique_key is None else _INSERT_JOB_UNLESS_KEY_TAKEN
    conn.execute(sql, new_job_params(job))


def jobs_by_unique_key(conn: sqlite3.Connection, keys: Sequence[Key]) -> dict[Key, Job]:
    """The jobs holding ``keys``, each in its tenant. The lookup is by key (the index's
    first column); rows of other tenants that hold the same key are left out."""
    wanted = set(keys)
    names = list({key: None for _, key in keys})
    found: dict[Key, Job] = {}
    for chunk in chunks(names):
        rows = conn.execute(
            f"SELECT {JOB_SELECT} FROM jobs WHERE unique_key IN ({marks(len(chunk))})", chunk
        ).fetchall()
        for row in rows:
            job = decode_job(row)
            key = (job.tenant, cast(str, job.unique_key))
            if key in wanted:
                found[key] = job
    return found


# -- workers' rows -----------------------------------------------------------------------------

_UPSERT_WORKER = f"""
INSERT INTO workers ({WORKER_SELECT}) VALUES ({marks(len(WORKER_COLUMNS))})
ON CONFLICT (id) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in WORKER_COLUMNS[1:])}
"""


def upsert_worker(conn: sqlite3.Connection, worker: WorkerInfo) -> None:
    """Insert or replace the worker's row, as given."""
    conn.execute(_UPSERT_WORKER, worker_params(worker))


# -- previews in listings --------------------------------------------------------------------

_Decoded = TypeVar("_Decoded", Job, DLQEntry, WorkflowRun)


@lru_cache(maxsize=64)
def preview_select(
    table: str, columns: tuple[str, ...], bodies: tuple[str, ...], preview: int
) -> str:
    """The columns of a listing with previews: each body longer than ``preview`` bytes is
    replaced by its first ``preview`` characters (``substr`` counts characters: the decoder
    cuts them to bytes), and each body's length in bytes follows the columns. Only the
    listed rows are read this way (the page is chosen by id first), so the long bodies
    neither leave SQLite nor go through a sorter."""
    n = int(preview)  # a number in the SQL text: the statement cache keeps one per length
    size = {b: f"length(CAST({b} AS BLOB))" for b in bodies}
    cols = [
        f"CASE WHEN {size[c]} > {n} THEN substr({c}, 1, {n}) ELSE {c} END" if c in size else c
        for c in columns
    ]
    return f"SELECT {', '.join(cols + list(size.values()))} FROM {table}"


def list_previewed(
    conn: sqlite3.Connection,
    table: str,
    columns: tuple[str, ...],
    bodies: tuple[str, ...],
    decode: Callable[[Sequence[Any]], _Decoded],
    filter: JobFilter | DLQFilter | RunFilter,
    conditions: list[str],
    params: list[Any],
) -> list[_Decoded]:
    """A listing page whose long bodies come back as :class:`Truncated`: the page's ids are
    chosen as by :func:`keyset_page`, then only those rows are read, with :func:`preview_select`."""
    assert filter.preview is not None
    preview = filter.preview
    inner, params = keyset_page(
        f"SELECT id FROM {table}",
        conditions,
        params,
        after=filter.after,
        order=filter.order,
        limit=filter.limit,
        offset=filter.offset,
    )
    order = "DESC" if filter.order is SortOrder.DESC else "ASC"
    select = preview_select(table, columns, bodies, preview)
    sql = f"{select} WHERE id IN ({inner}) ORDER BY id {order}"
    spots = [(body, columns.index(body)) for body in bodies]
    out: list[_Decoded] = []
    for row in conn.execute(sql, params).fetchall():
        values = list(row[: len(columns)])
        cut: dict[str, Any] = {}
        for (body, i), size in zip(spots, row[len(columns) :], strict=True):
            if size is not None and size > preview:
                cut[body] = Truncated(preview=Truncated.cut(values[i], preview), size=size)
                values[i] = "null"  # decodes to None; the Truncated takes its place below
        item = decode(values)
        out.append(attrs.evolve(item, **cut) if cut else item)
    return out
