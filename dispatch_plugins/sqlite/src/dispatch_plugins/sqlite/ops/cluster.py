"""The cluster: workers and the leader, cron, queues, and retention."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta

from dispatch_core.cluster import WorkerInfo
from dispatch_core.cron import CronEntry
from dispatch_core.errors import CronNotFoundError
from dispatch_core.models import Job, NewJob
from dispatch_core.queues import QueueConfig, QueueStats
from dispatch_core.states import JobState
from dispatch_core.store import PruneCutoffs
from dispatch_core.storekit import STORE_SECTIONS, job_from_new
from dispatch_plugins.sqlite.codec import (
    CRON_COLUMNS,
    CRON_SELECT,
    WORKER_COLUMNS,
    cron_params,
    decode_cron,
    decode_queue_config,
    decode_worker,
    to_us,
)
from dispatch_plugins.sqlite.connection import write_transaction
from dispatch_plugins.sqlite.ops.common import (
    RUNNABLE,
    insert_job,
    jobs_by_unique_key,
    marks,
    upsert_worker,
)

__all__ = [*STORE_SECTIONS["cluster"]]

# -- the cluster: workers and the leader ---------------------------------------------------------


def register_worker(conn: sqlite3.Connection, worker: WorkerInfo) -> None:
    """See :meth:`dispatch_core.store.Store.register_worker`."""
    upsert_worker(conn, worker)


def deregister_worker(conn: sqlite3.Connection, worker_id: str, *, now: datetime) -> None:
    """See :meth:`dispatch_core.store.Store.deregister_worker`."""
    with write_transaction(conn):
        conn.execute(
            "UPDATE workers SET state = 'stopped', last_seen = ? WHERE id = ?",
            (to_us(now), worker_id),
        )
        conn.execute("DELETE FROM leader WHERE holder = ?", (worker_id,))


def list_workers(conn: sqlite3.Connection) -> list[WorkerInfo]:
    """See :meth:`dispatch_core.store.Store.list_workers`."""
    columns = ", ".join(f"workers.{c}" for c in WORKER_COLUMNS)
    rows = conn.execute(
        f"""
        SELECT {columns}, leader.holder IS NOT NULL
        FROM workers LEFT JOIN leader ON leader.holder = workers.id
        ORDER BY workers.started_at, workers.id
        """
    ).fetchall()
    return [decode_worker(row[:-1], leader=bool(row[-1])) for row in rows]


# One statement, so two workers racing for the lease are serialised by SQLite's write lock:
# the row is taken when absent, expired, or already ours; RETURNING says whether it is ours.
_ACQUIRE_LEADERSHIP = """
INSERT INTO leader (id, holder, expires_at) VALUES (1, :me, :until)
ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE leader.holder = excluded.holder OR leader.expires_at <= :now
RETURNING holder
"""


def acquire_leadership(
    conn: sqlite3.Connection, *, worker_id: str, ttl: float, now: datetime
) -> bool:
    """See :meth:`dispatch_core.store.Store.acquire_leadership`."""
    params = {
        "me": worker_id,
        "until": to_us(now + timedelta(seconds=ttl)),
        "now": to_us(now),
    }
    return conn.execute(_ACQUIRE_LEADERSHIP, params).fetchone() is not None


def release_leadership(conn: sqlite3.Connection, worker_id: str) -> None:
    """See :meth:`dispatch_core.store.Store.release_leadership`."""
    conn.execute("DELETE FROM leader WHERE holder = ?", (worker_id,))


def get_leader(conn: sqlite3.Connection, *, now: datetime) -> str | None:
    """See :meth:`dispatch_core.store.Store.get_leader`."""
    row = conn.execute("SELECT holder FROM leader WHERE expires_at > ?", (to_us(now),)).fetchone()
    return None if row is None else str(row[0])


# -- cron ----------------------------------------------------------------------------------------

# A new entry is inserted as given; an existing one keeps enabled, last_run_at, last_job_id and
# created_at, and its next_run_at unless the schedule itself changed.
_UPSERT_CRON = f"""
INSERT INTO cron ({CRON_SELECT}) VALUES ({marks(len(CRON_COLUMNS))})
ON CONFLICT (name) DO UPDATE SET
    expr = excluded.expr, timezone = excluded.timezone, job_name = excluded.job_name,
    payload = excluded.payload, queue = excluded.queue, misfire = excluded.misfire,
    misfire_grace = excluded.misfire_grace,
    next_run_at = CASE WHEN cron.expr IS NOT excluded.expr
                         OR cron.timezone IS NOT excluded.timezone
                       THEN excluded.next_run_at ELSE cron.next_run_at END,
    updated_at = ?
"""


def upsert_cron(conn: sqlite3.Connection, entries: Sequence[CronEntry], *, now: datetime) -> None:
    """See :meth:`dispatch_core.store.Store.upsert_cron`."""
    if not entries:
        return
    now_us = to_us(now)
    with write_transaction(conn):
        conn.executemany(_UPSERT_CRON, [(*cron_params(e), now_us) for e in entries])


def list_cron(conn: sqlite3.Connection) -> list[CronEntry]:
    """See :meth:`dispatch_core.store.Store.list_cron`."""
    rows = conn.execute(f"SELECT {CRON_SELECT} FROM cron ORDER BY name").fetchall()
    return [decode_cron(row) for row in rows]


def get_cron(conn: sqlite3.Connection, name: str) -> CronEntry:
    """See :meth:`dispatch_core.store.Store.get_cron`."""
    row = conn.execute(f"SELECT {CRON_SELECT} FROM cron WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise CronNotFoundError(name)
    return decode_cron(row)


_SET_CRON_ENABLED = f"""
UPDATE cron SET enabled = :enabled, updated_at = :now,
    next_run_at = CASE WHEN :enabled THEN :next ELSE next_run_at END
WHERE name = :name
RETURNING {CRON_SELECT}
"""


def set_cron_enabled(
    conn: sqlite3.Connection, name: str, *, enabled: bool, next_run_at: datetime, now: datetime
) -> CronEntry:
    """See :meth:`dispatch_core.store.Store.set_cron_enabled`."""
    params = {"enabled": int(enabled), "now": to_us(now), "next": to_us(next_run_at), "name": name}
    row = conn.execute(_SET_CRON_ENABLED, params).fetchone()
    if row is None:
        raise CronNotFoundError(name)
    return decode_cron(row)


def fire_cron(
    conn: sqlite3.Connection,
    *,
    name: str,
    tick: datetime,
    next_run_at: datetime,
    job: NewJob | None,
    now: datetime,
) -> Job | None:
    """See :meth:`dispatch_core.store.Store.fire_cron`."""
    with write_transaction(conn):
        # The compare-and-set: only the first leader to fire this tick moves next_run_at on.
        moved = conn.execute(
            "UPDATE cron SET next_run_at = ? WHERE name = ? AND enabled AND next_run_at = ?",
            (to_us(next_run_at), name, to_us(tick)),
        ).rowcount
        if moved != 1 or job is None:
            return None
        insert_job(conn, job)  # a key taken in the job's tenant skips it
        if job.unique_key is None:
            fired = job_from_new(job)
        else:
            key = (job.tenant, job.unique_key)
            fired = jobs_by_unique_key(conn, [key])[key]
        conn.execute(
            "UPDATE cron SET last_run_at = ?, last_job_id = ? WHERE name = ?",
            (to_us(now), fired.id, name),
        )
    return fired


def delete_cron(conn: sqlite3.Connection, name: str) -> bool:
    """See :meth:`dispatch_core.store.Store.delete_cron`."""
    return conn.execute("DELETE FROM cron WHERE name = ?", (name,)).rowcount == 1


# -- queues --------------------------------------------------------------------------------------

# Limits are replaced; the paused flag is kept, and so is the bucket's level, capped at the new
# size (min() of NULL, a full bucket, stays NULL).
_SET_QUEUE = """
INSERT INTO queues (name, configured, concurrency, rate, burst, per_tenant)
VALUES (:name, 1, :concurrency, :rate, :burst, :per_tenant)
ON CONFLICT (name) DO UPDATE SET
    configured = 1, concurrency = excluded.concurrency, rate = excluded.rate,
    burst = excluded.burst, per_tenant = excluded.per_tenant, tokens = min(tokens, :size)
"""


def set_queue(conn: sqlite3.Connection, config: QueueConfig) -> None:
    """See :meth:`dispatch_core.store.Store.set_queue`."""
    params = {
        "name": config.name,
        "concurrency": config.concurrency,
        "rate": config.rate,
        "burst": config.burst,
        "per_tenant": int(config.per_tenant),
        "size": float(config.bucket_size),
    }
    with write_transaction(conn):
        conn.execute(_SET_QUEUE, params)
        conn.execute(
            "UPDATE queue_buckets SET tokens = min(tokens, :size) WHERE queue = :name", params
        )


def pause_queue(conn: sqlite3.Connection, name: str, *, paused: bool) -> None:
    """See :meth:`dispatch_core.store.Store.pause_queue`."""
    conn.execute(
        "INSERT INTO queues (name, paused) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
        (name, int(paused)),
    )


def list_queues(conn: sqlite3.Connection, *, now: datetime) -> list[QueueStats]:
    """See :meth:`dispatch_core.store.Store.list_queues`.

    Each count reads an index (runnable, running, finished jobs) rather than the table; all
    of them read one snapshot.
    """
    now_us = to_us(now)
    conn.execute("BEGIN")  # a read transaction: one snapshot for every count
    try:
        rows = conn.execute(
            "SELECT name, configured, concurrency, rate, burst, per_tenant, paused FROM queues"
        ).fetchall()
        depth = dict(
            conn.execute(f"SELECT queue, count(*) FROM jobs WHERE {RUNNABLE} GROUP BY queue")
        )
        running = dict(
            conn.execute("SELECT queue, count(*) FROM jobs WHERE state = 'running' GROUP BY queue")
        )
        completed = dict(
            conn.execute(
                "SELECT queue, count(*) FROM jobs WHERE state = 'completed' "
                "AND finished_at > ? AND finished_at <= ? GROUP BY queue",
                (now_us - 60_000_000, now_us),
            )
        )
        finished = {q for (q,) in conn.execute(_FINISHED_QUEUES)}
    finally:
        conn.execute("COMMIT")
    configs: dict[str, tuple[QueueConfig | None, bool]] = {}
    for name, configured, concurrency, rate, burst, per_tenant, paused in rows:
        config = (
            decode_queue_config(name, concurrency, rate, burst, per_tenant) if configured else None
        )
        configs[name] = (config, bool(paused))
    names = sorted(configs.keys() | depth.keys() | running.keys() | finished)
    return [
        QueueStats(
            name=name,
            config=configs.get(name, (None, False))[0],
            paused=configs.get(name, (None, False))[1],
            depth=depth.get(name, 0),
            running=running.get(name, 0),
            completed_last_minute=completed.get(name, 0),
        )
        for name in names
    ]


# The names of queues that have finished jobs, read from jobs_finished_idx alone (it covers them).
_FINISHED_QUEUES = "SELECT DISTINCT queue FROM jobs WHERE finished_at IS NOT NULL"


# -- retention -----------------------------------------------------------------------------------

_PRUNE_JOBS = """
DELETE FROM jobs WHERE rowid IN (
    SELECT rowid FROM jobs WHERE state = ? AND finished_at < ? ORDER BY finished_at LIMIT ?
)
"""
_PRUNE_DLQ = """
DELETE FROM dlq WHERE id IN (
    SELECT id FROM dlq WHERE failed_at < ? ORDER BY failed_at, id LIMIT ?
)
"""
_PRUNE_WORKERS = """
DELETE FROM workers WHERE id IN (
    SELECT id FROM workers WHERE state IN ('stopped', 'dead') AND last_seen < ?
    ORDER BY last_seen LIMIT ?
)
"""


def prune(conn: sqlite3.Connection, cutoffs: PruneCutoffs, *, limit: int = 10_000) -> int:
    """See :meth:`dispatch_core.store.Store.prune`.

    One ``DELETE`` statement (its own short transaction) per kind of row.
    """
    if limit <= 0:
        return 0
    deleted = 0
    for state, cutoff in (
        (JobState.COMPLETED, cutoffs.completed),
        (JobState.FAILED, cutoffs.failed),
        (JobState.CANCELLED, cutoffs.cancelled),
    ):
        if cutoff is not None:
            deleted += conn.execute(_PRUNE_JOBS, (state.value, to_us(cutoff), limit)).rowcount
    if cutoffs.dlq is not None:
        deleted += conn.execute(_PRUNE_DLQ, (to_us(cutoffs.dlq), limit)).rowcount
    if cutoffs.workers is not None:
        deleted += conn.execute(_PRUNE_WORKERS, (to_us(cutoffs.workers), limit)).rowcount
    return deleted
