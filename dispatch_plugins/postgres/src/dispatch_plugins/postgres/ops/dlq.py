"""The dead-letter queue: list_dlq, count_dlq, get_dlq, replay_dlq and purge_dlq."""

from __future__ import annotations

from datetime import datetime
from functools import cached_property, lru_cache
from typing import cast

from dispatch_core.errors import DLQEntryNotFoundError
from dispatch_core.models import DLQEntry, DLQFilter, Job, SortOrder
from dispatch_core.storekit import STORE_SECTIONS, job_from_new
from dispatch_plugins.postgres.codec import (
    DLQ_COLUMNS,
    DLQ_SELECT,
    INSERT_COLUMNS,
    aware,
    decode_dlq,
    new_job_params,
)
from dispatch_plugins.postgres.ops.common import (
    ListingSQL,
    Steps,
    Stmt,
    Tables,
    given,
    listing,
)

__all__ = ["DlqReadSQL", "ReplaySQL", "PurgeSQL", "DlqSQL", *STORE_SECTIONS["dlq"]]


def _replayed(replayed: bool | None) -> tuple[str, ...]:
    """The condition of a ``replayed`` filter (``IS NULL`` is dlq_unreplayed_idx's WHERE)."""
    if replayed is None:
        return ()
    return ("replayed_at IS NOT NULL",) if replayed else ("replayed_at IS NULL",)


class DlqReadSQL(ListingSQL):
    """The statements of :func:`list_dlq`, :func:`count_dlq` and :func:`get_dlq`."""

    def list_dlq(
        self, columns: tuple[str, ...], after: bool, order: SortOrder, replayed: bool | None
    ) -> str:
        """Dead-letter entries as :meth:`~dispatch_plugins.postgres.ops.jobs.JobReadSQL
        .list_jobs` pages jobs, replayed or not when asked."""
        select = f"SELECT {DLQ_SELECT} FROM {self.dlq}"
        return self.page(select, columns, after, order, _replayed(replayed))

    @lru_cache(maxsize=32)  # noqa: B019 -- one Statements per schema, kept for the process
    def count_dlq(
        self, by_queue: bool, by_tenant: bool, replayed: bool | None, before: bool
    ) -> str:
        """The number of dead-letter entries, of one queue and one tenant when asked, never
        replayed or replayed when asked, failed before a time (the last parameter) when
        ``before``."""
        conditions = [f"{c} = %s" for c, on in (("queue", by_queue), ("tenant", by_tenant)) if on]
        conditions += _replayed(replayed)
        if before:
            conditions.append("failed_at < %b")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return f"SELECT count(*) FROM {self.dlq}{where}"

    @cached_property
    def get_dlq(self) -> str:
        return f"SELECT {DLQ_SELECT} FROM {self.dlq} WHERE id = %s"


_DLQ_BODIES = ("payload",)


def list_dlq(q: DlqReadSQL, filter: DLQFilter) -> Steps[list[DLQEntry]]:
    """See :meth:`dispatch_core.store.Store.list_dlq`. Entry ids are TypeIDs made when the
    job failed (in :func:`~dispatch_plugins.postgres.ops.claim.finish` and
    :func:`~dispatch_plugins.postgres.ops.claim.rescue_expired`), so id order is failure
    order; the pages walk the primary key."""
    columns, params = given(
        ("queue", filter.queue), ("name", filter.name), ("tenant", filter.tenant)
    )
    sql = q.list_dlq(columns, filter.after is not None, filter.order, filter.replayed)
    return (yield from listing(q, sql, params, filter, DLQ_COLUMNS, _DLQ_BODIES, decode_dlq))


def count_dlq(
    q: DlqReadSQL,
    *,
    queue: str | None = None,
    tenant: str | None = None,
    replayed: bool | None = None,
    before: datetime | None = None,
) -> Steps[int]:
    """See :meth:`dispatch_core.store.Store.count_dlq`."""
    columns, params = given(("queue", queue), ("tenant", tenant))
    if before is not None:
        params.append(aware(before))
    sql = q.count_dlq("queue" in columns, "tenant" in columns, replayed, before is not None)
    rows = yield Stmt(sql, params, rows=True)
    return cast(int, rows[0][0])


def get_dlq(q: DlqReadSQL, entry_id: str) -> Steps[DLQEntry]:
    """See :meth:`dispatch_core.store.Store.get_dlq`."""
    rows = yield Stmt(q.get_dlq, (entry_id,), rows=True)
    if not rows:
        raise DLQEntryNotFoundError(entry_id)
    return decode_dlq(rows[0])


class ReplaySQL(DlqReadSQL):
    """The statements of :func:`replay_dlq`."""

    @cached_property
    def replay(self) -> str:
        """Stamping the entry and inserting its copy are one statement: the insert happens
        only if the entry still exists."""
        return (
            f"WITH e AS (\n"
            f"    UPDATE {self.dlq} SET replayed_at = %(now)b, replay_job_id = %(id)s\n"
            f"    WHERE id = %(entry)s RETURNING id\n"
            f"), ins AS (\n"
            f"    INSERT INTO {self.jobs} ({', '.join(INSERT_COLUMNS)})\n"
            f"    SELECT %(id)s, %(name)s, %(queue)s, %(payload)s::jsonb, %(priority)s,\n"
            f"           %(max_attempts)s, %(timeout)s, %(run_at)b, %(created_at)b,\n"
            f"           %(created_at)b, %(unique_key)s, %(tenant)s, %(headers)s::jsonb\n"
            f"    FROM e RETURNING id\n"
            f")\n"
            f"SELECT id, (SELECT {self.notify}::text) FROM ins"
        )


def replay_dlq(q: ReplaySQL, entry_id: str, *, new_job_id: str, now: datetime) -> Steps[Job]:
    """See :meth:`dispatch_core.store.Store.replay_dlq`: the copy is built by
    :meth:`DLQEntry.replay_as`, then inserted and the entry stamped in one statement."""
    entry = yield from get_dlq(q, entry_id)
    new = entry.replay_as(job_id=new_job_id, now=now)
    params = dict(zip(INSERT_COLUMNS, new_job_params(new), strict=True))
    params.update(entry=entry_id, now=aware(now))
    rows = yield Stmt(q.replay, params, rows=True)
    if not rows:  # purged meanwhile
        raise DLQEntryNotFoundError(entry_id)
    return job_from_new(new)


class PurgeSQL(Tables):
    """The statement of :func:`purge_dlq`."""

    @lru_cache(maxsize=16)  # noqa: B019
    def purge_dlq(self, by_queue: bool, by_tenant: bool, limited: bool) -> str:
        """Delete entries failed before ``%(before)b`` in one statement; when ``limited``,
        only the ``%(limit)s`` oldest by id (the sub-select, an InitPlan, picks them)."""
        filters = "".join(
            f" AND {c} = %({c})s" for c, on in (("queue", by_queue), ("tenant", by_tenant)) if on
        )
        where = f"failed_at < %(before)b{filters}"
        if not limited:
            return f"DELETE FROM {self.dlq} WHERE {where}"
        return (
            f"DELETE FROM {self.dlq}\n"
            f"WHERE id = ANY(ARRAY(SELECT id FROM {self.dlq} WHERE {where}\n"
            "                     ORDER BY id LIMIT %(limit)s))"
        )


def purge_dlq(
    q: PurgeSQL,
    *,
    before: datetime,
    queue: str | None = None,
    tenant: str | None = None,
    limit: int | None = None,
) -> Steps[int]:
    """See :meth:`dispatch_core.store.Store.purge_dlq`: one statement, which with a ``limit``
    deletes the oldest ids first."""
    if limit is not None and limit <= 0:
        return 0
    sql = q.purge_dlq(queue is not None, tenant is not None, limit is not None)
    params = {"before": aware(before), "queue": queue, "tenant": tenant, "limit": limit}
    count: int = yield Stmt(sql, params)
    return count


class DlqSQL(ReplaySQL, PurgeSQL):
    """Every statement of this module."""
