"""The dead-letter queue: listing, counting, reading, replaying and purging entries."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import cast

from dispatch_core.errors import DLQEntryNotFoundError
from dispatch_core.models import DLQEntry, DLQFilter, Job
from dispatch_core.storekit import STORE_SECTIONS, job_from_new
from dispatch_plugins.sqlite.codec import DLQ_COLUMNS, DLQ_SELECT, decode_dlq, to_us
from dispatch_plugins.sqlite.connection import write_transaction
from dispatch_plugins.sqlite.ops.common import insert_job, keyset_page, list_previewed, where_equal

__all__ = [*STORE_SECTIONS["dlq"]]

# The bodies a listing with previews cuts short.
_DLQ_BODIES = ("payload",)


def list_dlq(conn: sqlite3.Connection, filter: DLQFilter) -> list[DLQEntry]:
    """See :meth:`dispatch_core.store.Store.list_dlq`. Entry ids are TypeIDs made when the
    job failed, so id order is failure order; the pages walk the id index."""
    conditions, params = where_equal(
        (("queue", filter.queue), ("name", filter.name), ("tenant", filter.tenant))
    )
    conditions += _replayed(filter.replayed)
    if filter.preview is not None:
        return list_previewed(
            conn, "dlq", DLQ_COLUMNS, _DLQ_BODIES, decode_dlq, filter, conditions, params
        )
    sql, params = keyset_page(
        f"SELECT {DLQ_SELECT} FROM dlq",
        conditions,
        params,
        after=filter.after,
        order=filter.order,
        limit=filter.limit,
        offset=filter.offset,
    )
    return [decode_dlq(row) for row in conn.execute(sql, params).fetchall()]


def count_dlq(
    conn: sqlite3.Connection,
    *,
    queue: str | None = None,
    tenant: str | None = None,
    replayed: bool | None = None,
    before: datetime | None = None,
) -> int:
    """See :meth:`dispatch_core.store.Store.count_dlq`."""
    conditions, params = where_equal((("queue", queue), ("tenant", tenant)))
    conditions += _replayed(replayed)
    if before is not None:
        conditions.append("failed_at < ?")
        params.append(to_us(before))
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    (n,) = conn.execute(f"SELECT count(*) FROM dlq{where}", params).fetchone()
    return cast(int, n)


def _replayed(replayed: bool | None) -> list[str]:
    """The condition of a ``replayed`` filter (``IS NULL`` is dlq_unreplayed_idx's WHERE)."""
    if replayed is None:
        return []
    return ["replayed_at IS NOT NULL" if replayed else "replayed_at IS NULL"]


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
        insert_job(conn, new)  # a replay has no unique key: the plain insert
        conn.execute(
            "UPDATE dlq SET replayed_at = ?, replay_job_id = ? WHERE id = ?",
            (to_us(now), new_job_id, entry_id),
        )
    return job_from_new(new)


def purge_dlq(
    conn: sqlite3.Connection,
    *,
    before: datetime,
    queue: str | None = None,
    tenant: str | None = None,
    limit: int | None = None,
) -> int:
    """See :meth:`dispatch_core.store.Store.purge_dlq`: one ``DELETE`` statement; with a
    ``limit``, its sub-select takes the oldest ids first."""
    if limit is not None and limit <= 0:
        return 0
    conditions, params = where_equal((("queue", queue), ("tenant", tenant)))
    where = " AND ".join(["failed_at < ?", *conditions])
    params = [to_us(before), *params]
    if limit is None:
        return conn.execute(f"DELETE FROM dlq WHERE {where}", params).rowcount
    sql = f"DELETE FROM dlq WHERE id IN (SELECT id FROM dlq WHERE {where} ORDER BY id LIMIT ?)"
    return conn.execute(sql, [*params, limit]).rowcount
