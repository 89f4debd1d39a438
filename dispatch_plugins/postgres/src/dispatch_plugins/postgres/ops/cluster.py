"""The cluster: workers, the leader, cron, queues and retention."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from dispatch_core.cluster import WorkerInfo
from dispatch_core.cron import CronEntry
from dispatch_core.errors import CronNotFoundError
from dispatch_core.models import Job, NewJob
from dispatch_core.queues import QueueConfig, QueueStats
from dispatch_core.store import PruneCutoffs
from dispatch_core.storekit import STORE_SECTIONS
from dispatch_plugins.postgres.codec import (
    CRON_COLUMNS,
    CRON_SELECT,
    WORKER_COLUMNS,
    aware,
    cron_params,
    decode_cron,
    decode_queue_config,
    decode_worker,
    worker_params,
)
from dispatch_plugins.postgres.ops.common import TRANSACTION, Steps, Stmt, Tables, WorkerRowSQL
from dispatch_plugins.postgres.ops.jobs import EnqueueSQL, enqueue
from dispatch_plugins.postgres.schema import RUNNABLE

__all__ = [
    "WorkersSQL",
    "LeaderSQL",
    "CronSQL",
    "CronEditSQL",
    "CronFireSQL",
    "QueuesSQL",
    "PruneSQL",
    "ClusterSQL",
    *STORE_SECTIONS["cluster"],
]

# -- workers ------------------------------------------------------------------------------------


class WorkersSQL(WorkerRowSQL):
    """The statements of the worker rows' operations."""

    @cached_property
    def register_worker(self) -> str:
        return self.upsert_worker

    @cached_property
    def deregister_worker(self) -> str:
        return (
            f"WITH l AS (DELETE FROM {self.leader} WHERE holder = %(id)s)\n"
            f"UPDATE {self.workers} SET state = 'stopped', last_seen = %(now)b WHERE id = %(id)s"
        )

    @cached_property
    def list_workers(self) -> str:
        return (
            f"SELECT {', '.join(f'w.{c}' for c in WORKER_COLUMNS)}, l.holder IS NOT NULL\n"
            f"FROM {self.workers} AS w LEFT JOIN {self.leader} AS l ON l.holder = w.id\n"
            "ORDER BY w.started_at, w.id"
        )


def register_worker(q: WorkersSQL, worker: WorkerInfo) -> Steps[None]:
    """See :meth:`dispatch_core.store.Store.register_worker`."""
    yield Stmt(q.register_worker, worker_params(worker))


def deregister_worker(q: WorkersSQL, worker_id: str, *, now: datetime) -> Steps[None]:
    """See :meth:`dispatch_core.store.Store.deregister_worker`: one statement, the leader
    lease given up with it."""
    yield Stmt(q.deregister_worker, {"id": worker_id, "now": aware(now)})


def list_workers(q: WorkersSQL) -> Steps[list[WorkerInfo]]:
    """See :meth:`dispatch_core.store.Store.list_workers`."""
    rows = yield Stmt(q.list_workers, rows=True)
    n = len(WORKER_COLUMNS)
    return [decode_worker(row[:n], leader=bool(row[n])) for row in rows]


# -- the leader ---------------------------------------------------------------------------------


class LeaderSQL(Tables):
    """The statements of the leader lease."""

    @cached_property
    def acquire_leadership(self) -> str:
        """One statement: the row lock taken by ON CONFLICT makes the condition and the write
        atomic, so of two workers racing for an expired lease exactly one gets a row back."""
        return (
            f"INSERT INTO {self.leader} AS l (name, holder, expires_at)\n"
            "VALUES ('leader', %(id)s, %(until)b)\n"
            "ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder,\n"
            "    expires_at = EXCLUDED.expires_at\n"
            "WHERE l.holder = EXCLUDED.holder OR l.expires_at <= %(now)b\n"
            "RETURNING holder"
        )

    @cached_property
    def release_leadership(self) -> str:
        return f"DELETE FROM {self.leader} WHERE name = 'leader' AND holder = %s"

    @cached_property
    def get_leader(self) -> str:
        return f"SELECT holder FROM {self.leader} WHERE name = 'leader' AND expires_at > %b"


def acquire_leadership(q: LeaderSQL, *, worker_id: str, ttl: float, now: datetime) -> Steps[bool]:
    """See :meth:`dispatch_core.store.Store.acquire_leadership`: one upsert."""
    now = aware(now)
    rows = yield Stmt(
        q.acquire_leadership,
        {"id": worker_id, "until": now + timedelta(seconds=ttl), "now": now},
        rows=True,
    )
    return bool(rows)


def release_leadership(q: LeaderSQL, worker_id: str) -> Steps[None]:
    """See :meth:`dispatch_core.store.Store.release_leadership`."""
    yield Stmt(q.release_leadership, (worker_id,))


def get_leader(q: LeaderSQL, *, now: datetime) -> Steps[str | None]:
    """See :meth:`dispatch_core.store.Store.get_leader`."""
    rows = yield Stmt(q.get_leader, (aware(now),), rows=True)
    return rows[0][0] if rows else None


# -- cron ---------------------------------------------------------------------------------------

_CRON_TYPES = (
    "text", "text", "text", "text", "text", "text", "text", "float8", "bool",
    "timestamptz", "timestamptz", "text", "timestamptz", "timestamptz",
)  # fmt: skip


class CronSQL(Tables):
    """The statements of :func:`upsert_cron`, :func:`list_cron` and :func:`get_cron`."""

    @cached_property
    def upsert_cron(self) -> str:
        """A re-registered entry keeps its enabled flag, last run and, unless its schedule
        changed, its next tick (SET sees the row as it was)."""
        ccols = ", ".join(CRON_COLUMNS)
        arrays = ", ".join(
            f"%({c})b::{t}[]" for c, t in zip(CRON_COLUMNS, _CRON_TYPES, strict=True)
        )
        return f"""
INSERT INTO {self.cron} AS c ({ccols})
SELECT name, expr, timezone, job_name, payload::jsonb, queue, misfire, misfire_grace, enabled,
       next_run_at, last_run_at, last_job_id, created_at, updated_at
FROM unnest({arrays}) AS e({ccols})
ON CONFLICT (name) DO UPDATE SET
    expr = EXCLUDED.expr, timezone = EXCLUDED.timezone, job_name = EXCLUDED.job_name,
    payload = EXCLUDED.payload, queue = EXCLUDED.queue, misfire = EXCLUDED.misfire,
    misfire_grace = EXCLUDED.misfire_grace, updated_at = %(now)b,
    next_run_at = CASE WHEN c.expr = EXCLUDED.expr AND c.timezone = EXCLUDED.timezone
                       THEN c.next_run_at ELSE EXCLUDED.next_run_at END
"""

    @cached_property
    def list_cron(self) -> str:
        return f"SELECT {CRON_SELECT} FROM {self.cron} ORDER BY name"

    @cached_property
    def get_cron(self) -> str:
        return f"SELECT {CRON_SELECT} FROM {self.cron} WHERE name = %s"


def upsert_cron(q: CronSQL, entries: Sequence[CronEntry], *, now: datetime) -> Steps[None]:
    """See :meth:`dispatch_core.store.Store.upsert_cron`: one statement for the batch (the
    last of several entries with one name wins)."""
    by_name = {entry.name: entry for entry in entries}
    if not by_name:
        return
    columns = list(zip(*(cron_params(entry) for entry in by_name.values()), strict=True))
    params: dict[str, Any] = {c: list(v) for c, v in zip(CRON_COLUMNS, columns, strict=True)}
    params["now"] = aware(now)
    yield Stmt(q.upsert_cron, params)


def list_cron(q: CronSQL) -> Steps[list[CronEntry]]:
    """See :meth:`dispatch_core.store.Store.list_cron`."""
    rows = yield Stmt(q.list_cron, rows=True)
    entries = [decode_cron(row) for row in rows]
    entries.sort(key=lambda entry: entry.name)  # Python's order, whatever the collation
    return entries


def get_cron(q: CronSQL, name: str) -> Steps[CronEntry]:
    """See :meth:`dispatch_core.store.Store.get_cron`."""
    rows = yield Stmt(q.get_cron, (name,), rows=True)
    if not rows:
        raise CronNotFoundError(name)
    return decode_cron(rows[0])


class CronEditSQL(Tables):
    """The statements of :func:`set_cron_enabled` and :func:`delete_cron`."""

    @cached_property
    def set_cron_enabled(self) -> str:
        return (
            f"UPDATE {self.cron} SET enabled = %(enabled)s, updated_at = %(now)b,\n"
            "    next_run_at = CASE WHEN %(enabled)s THEN %(next)b ELSE next_run_at END\n"
            f"WHERE name = %(name)s RETURNING {CRON_SELECT}"
        )

    @cached_property
    def delete_cron(self) -> str:
        return f"DELETE FROM {self.cron} WHERE name = %s"


def set_cron_enabled(
    q: CronEditSQL, name: str, *, enabled: bool, next_run_at: datetime, now: datetime
) -> Steps[CronEntry]:
    """See :meth:`dispatch_core.store.Store.set_cron_enabled`: one conditional update."""
    rows = yield Stmt(
        q.set_cron_enabled,
        {"name": name, "enabled": enabled, "next": aware(next_run_at), "now": aware(now)},
        rows=True,
    )
    if not rows:
        raise CronNotFoundError(name)
    return decode_cron(rows[0])


def delete_cron(q: CronEditSQL, name: str) -> Steps[bool]:
    """See :meth:`dispatch_core.store.Store.delete_cron`."""
    count: int = yield Stmt(q.delete_cron, (name,))
    return count > 0


class CronFireSQL(EnqueueSQL):
    """The statements of :func:`fire_cron` (a fired tick enqueues its job)."""

    @cached_property
    def fire_cron(self) -> str:
        """The compare-and-set: of any number of leaders firing the same tick, one row comes
        back to one of them."""
        return (
            f"UPDATE {self.cron} SET next_run_at = %(next)b,\n"
            "    last_run_at = CASE WHEN %(fired)s THEN %(now)b ELSE last_run_at END,\n"
            "    last_job_id = CASE WHEN %(fired)s THEN %(job_id)s ELSE last_job_id END\n"
            "WHERE name = %(name)s AND enabled AND next_run_at = %(tick)b\n"
            "RETURNING name"
        )

    @cached_property
    def cron_last_job(self) -> str:
        return f"UPDATE {self.cron} SET last_job_id = %s WHERE name = %s"


def fire_cron(
    q: CronFireSQL,
    *,
    name: str,
    tick: datetime,
    next_run_at: datetime,
    job: NewJob | None,
    now: datetime,
) -> Steps[Job | None]:
    """See :meth:`dispatch_core.store.Store.fire_cron`.

    One transaction: the compare-and-set on ``next_run_at`` first (it locks the entry's row,
    so a second leader firing the same tick waits, then finds the tick gone), then the job,
    inserted by its unique key; the entry points at the job the key holds.
    """
    yield TRANSACTION
    rows = yield Stmt(
        q.fire_cron,
        {
            "name": name,
            "tick": aware(tick),
            "next": aware(next_run_at),
            "fired": job is not None,
            "job_id": None if job is None else job.id,
            "now": aware(now),
        },
        rows=True,
    )
    if not rows or job is None:
        return None
    (fired,) = yield from enqueue(q, [job])
    if fired.id != job.id:  # the key was taken: the entry records the job that holds it
        yield Stmt(q.cron_last_job, (fired.id, name))
    return fired


# -- queues -------------------------------------------------------------------------------------


class QueuesSQL(Tables):
    """The statements of the queues' operations."""

    @cached_property
    def set_queue(self) -> str:
        """New limits keep the pause flag and the bucket's level, capped at the new size (NULL
        tokens: a full bucket). Lifting a limit makes jobs claimable: wake the workers."""
        return f"""
WITH u AS (
    INSERT INTO {self.queues} AS q (name, configured, concurrency, rate, burst, per_tenant)
    VALUES (%(name)s, true, %(concurrency)s, %(rate)s, %(burst)s, %(per_tenant)s)
    ON CONFLICT (name) DO UPDATE SET
        configured = true, concurrency = EXCLUDED.concurrency, rate = EXCLUDED.rate,
        burst = EXCLUDED.burst, per_tenant = EXCLUDED.per_tenant,
        tokens = CASE WHEN q.tokens IS NULL THEN NULL ELSE least(q.tokens, %(size)s) END
)
SELECT {self.notify}::text
"""

    @cached_property
    def cap_buckets(self) -> str:
        return (
            f"UPDATE {self.buckets} SET tokens = %(size)s "
            "WHERE queue = %(name)s AND tokens > %(size)s"
        )

    @cached_property
    def pause_queue(self) -> str:
        return f"""
WITH u AS (
    INSERT INTO {self.queues} AS q (name, paused) VALUES (%(name)s, %(paused)s)
    ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused
)
SELECT {self.notify}::text
"""

    @cached_property
    def list_queues(self) -> str:
        """Every queue that has a row or jobs. Counting every job's queue is a scan of the
        table, like count_jobs(): an operator's view, not a hot path."""
        return f"""
WITH c AS (
    SELECT queue,
           count(*) FILTER (WHERE {RUNNABLE}) AS depth,
           count(*) FILTER (WHERE state = 'running') AS running,
           count(*) FILTER (WHERE state = 'completed' AND finished_at > %(since)b
                                  AND finished_at <= %(now)b) AS done
    FROM {self.jobs} GROUP BY queue
)
SELECT coalesce(q.name, c.queue), q.configured, q.concurrency, q.rate, q.burst, q.per_tenant,
       coalesce(q.paused, false), coalesce(c.depth, 0), coalesce(c.running, 0),
       coalesce(c.done, 0)
FROM {self.queues} AS q FULL JOIN c ON c.queue = q.name
"""


def set_queue(q: QueuesSQL, config: QueueConfig) -> Steps[None]:
    """See :meth:`dispatch_core.store.Store.set_queue`.

    The queue's row first, then its per-tenant buckets, in one transaction: the same lock
    order as a claim, which writes buckets only under the row's lock.
    """
    params = {
        "name": config.name,
        "concurrency": config.concurrency,
        "rate": None if config.rate is None else float(config.rate),
        "burst": config.burst,
        "per_tenant": config.per_tenant,
        "size": float(config.bucket_size),
    }
    yield TRANSACTION
    yield Stmt(q.set_queue, params, rows=True)
    yield Stmt(q.cap_buckets, params)


def pause_queue(q: QueuesSQL, name: str, *, paused: bool) -> Steps[None]:
    """See :meth:`dispatch_core.store.Store.pause_queue`; a resume wakes the workers."""
    yield Stmt(q.pause_queue, {"name": name, "paused": paused}, rows=True)


def list_queues(q: QueuesSQL, *, now: datetime) -> Steps[list[QueueStats]]:
    """See :meth:`dispatch_core.store.Store.list_queues`."""
    now = aware(now)
    rows = yield Stmt(q.list_queues, {"since": now - timedelta(minutes=1), "now": now}, rows=True)
    stats = [
        QueueStats(
            name=row[0],
            config=None if row[1] is None else decode_queue_config(row[:6]),
            paused=row[6],
            depth=row[7],
            running=row[8],
            completed_last_minute=row[9],
        )
        for row in rows
    ]
    stats.sort(key=lambda s: s.name)
    return stats


# -- retention ----------------------------------------------------------------------------------


class PruneSQL(Tables):
    """The statements of :func:`prune`. Batched: the sub-select picks at most ``%(limit)s``
    rows by index, the outer condition re-checks each row as it is now (a job retried
    meanwhile is no longer finished)."""

    @cached_property
    def prune_jobs(self) -> dict[str, str]:
        return {
            state: (
                f"DELETE FROM {self.jobs}\n"
                f"WHERE id = ANY(ARRAY(SELECT id FROM {self.jobs}\n"
                f"                     WHERE state = '{state}' AND finished_at < %(before)b\n"
                "                     LIMIT %(limit)s))\n"
                f"  AND state = '{state}' AND finished_at < %(before)b"
            )
            for state in ("completed", "failed", "cancelled")
        }

    @cached_property
    def prune_dlq(self) -> str:
        return (
            f"DELETE FROM {self.dlq}\n"
            f"WHERE id = ANY(ARRAY(SELECT id FROM {self.dlq} WHERE failed_at < %(before)b\n"
            "                     ORDER BY failed_at LIMIT %(limit)s))"
        )

    @cached_property
    def prune_workers(self) -> str:
        return (
            f"DELETE FROM {self.workers}\n"
            f"WHERE id = ANY(ARRAY(SELECT id FROM {self.workers}\n"
            "                     WHERE state IN ('stopped', 'dead') AND last_seen < %(before)b\n"
            "                     LIMIT %(limit)s))\n"
            "  AND state IN ('stopped', 'dead') AND last_seen < %(before)b"
        )


def prune(q: PruneSQL, cutoffs: PruneCutoffs, *, limit: int = 10_000) -> Steps[int]:
    """See :meth:`dispatch_core.store.Store.prune`: one short statement (its own
    transaction) per kind, each deleting at most ``limit`` rows."""
    if limit <= 0:
        return 0
    deleted = 0
    for state, before in (
        ("completed", cutoffs.completed),
        ("failed", cutoffs.failed),
        ("cancelled", cutoffs.cancelled),
    ):
        if before is not None:
            count: int = yield Stmt(q.prune_jobs[state], {"before": aware(before), "limit": limit})
            deleted += count
    for sql, before in ((q.prune_dlq, cutoffs.dlq), (q.prune_workers, cutoffs.workers)):
        if before is not None:
            count = yield Stmt(sql, {"before": aware(before), "limit": limit})
            deleted += count
    return deleted


class ClusterSQL(WorkersSQL, LeaderSQL, CronSQL, CronEditSQL, CronFireSQL, QueuesSQL, PruneSQL):
    """Every statement of this module."""
