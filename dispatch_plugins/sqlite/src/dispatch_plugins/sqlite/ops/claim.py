"""The worker's hot path: claim (with the queues' limits), heartbeat, finish, rescue, and the
next due time."""

from __future__ import annotations

import contextlib
import math
import sqlite3
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import attrs

from dispatch_core.cluster import WorkerInfo, WorkerState
from dispatch_core.models import Job, Outcome, OutcomeKind
from dispatch_core.queues import QueueConfig, TokenBucket
from dispatch_core.states import JobState
from dispatch_core.storekit import STORE_SECTIONS, claim_order, new_id
from dispatch_plugins.sqlite.codec import (
    JOB_SELECT,
    decode_job,
    decode_queue_config,
    dump_json,
    dump_json_opt,
    from_us,
    from_us_opt,
    to_us,
)
from dispatch_plugins.sqlite.connection import write_transaction
from dispatch_plugins.sqlite.ops.common import (
    CHUNK,
    LEASE_FREE,
    RUNNABLE,
    chunks,
    marks,
    upsert_worker,
)

__all__ = ["LimitedQueues", *STORE_SECTIONS["claim"]]


def _filters(
    queues: Collection[str] | None, names: Collection[str] | None
) -> tuple[str, list[str]]:
    """SQL conditions (each starting with AND) and parameters for queue and name filters."""
    sql = ""
    params: list[str] = []
    if queues is not None:
        sql += f" AND queue IN ({marks(len(queues))})"
        params.extend(queues)
    if names is not None:
        sql += f" AND name IN ({marks(len(names))})"
        params.extend(names)
    return sql, params


_LIMITED_NAMES = """
SELECT name FROM queues WHERE NOT paused AND (concurrency IS NOT NULL OR rate IS NOT NULL)
"""


class LimitedQueues:
    """Which queues have limits, as this connection last read them: a hint for :func:`claim`.

    The one-statement claim leaves out the jobs of paused and limited queues by itself (exact,
    whatever the hint says); the hint only tells :func:`claim` whether to look for limited
    queues' jobs too. So a stale hint can delay those jobs, never claim them past a limit. It
    is read again when older than :attr:`ttl`, after every claim that came back short of its
    limit, and by :meth:`invalidate` after this process changes a queue.
    """

    #: Seconds a reading is trusted while claims come back full.
    ttl = 0.5

    def __init__(self) -> None:
        self.names: frozenset[str] = frozenset()
        self._read_at = -math.inf

    def invalidate(self) -> None:
        """Forget the reading; the next claim reads the queues again."""
        self._read_at = -math.inf

    def stale(self) -> bool:
        """Whether the reading is older than :attr:`ttl`."""
        return time.monotonic() - self._read_at > self.ttl

    def set(self, names: Iterable[str]) -> None:
        """Record a reading made now."""
        self.names = frozenset(names)
        self._read_at = time.monotonic()

    def load(self, conn: sqlite3.Connection) -> None:
        """Read the limited queues' names."""
        self.set(name for (name,) in conn.execute(_LIMITED_NAMES))

    def applies(self, queues: Collection[str] | None) -> bool:
        """Whether a claim from ``queues`` may find jobs of a limited queue."""
        if queues is None:
            return bool(self.names)
        return not self.names.isdisjoint(queues)


# A queue row that holds its jobs back from the one-statement claim: paused, or limited (its jobs
# are claimed by _claim_with_limits, which counts and charges them under the write lock).
_HELD = "(queues.paused OR queues.concurrency IS NOT NULL OR queues.rate IS NOT NULL)"
_NOT_HELD = f"NOT EXISTS (SELECT 1 FROM queues WHERE queues.name = jobs.queue AND {_HELD})"
_CLAIM_SET = """
SET state = 'running', attempt = attempt + 1, worker_id = ?,
    attempt_token = lower(hex(randomblob(8))),
    started_at = ?, lease_expires_at = ?, updated_at = ?
"""


@lru_cache(maxsize=64)
def _claim_sql(n_queues: int | None, n_names: int | None) -> str:
    queue_filter = "" if n_queues is None else f" AND queue IN ({marks(n_queues)})"
    name_filter = "" if n_names is None else f" AND name IN ({marks(n_names)})"
    # One statement: SQLite has a single writer, so two connections (or processes) running it
    # at once are serialised and never take the same row. The NOT EXISTS probe of the (small)
    # queues table keeps paused and limited queues out. The jobs are chosen from
    # jobs_claim_idx alone (it covers every column the subquery reads) and updated by rowid:
    # only the rows claimed are read, so no payload but theirs.
    return f"""
    UPDATE jobs {_CLAIM_SET}
    WHERE rowid IN (
        SELECT rowid FROM jobs
        WHERE {RUNNABLE} AND run_at <= ?{queue_filter}{name_filter} AND {_NOT_HELD}
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
    limited: LimitedQueues | None = None,
) -> list[Job]:
    """See :meth:`dispatch_core.store.Store.claim`.

    Without limited queues in the way this is one ``UPDATE ... RETURNING`` statement. When some
    of ``queues`` are limited (as ``limited`` says, read again if stale), the claim is one
    ``BEGIN IMMEDIATE`` transaction that counts, charges and claims them together with the
    other queues' jobs, in claim order.
    """
    if limit <= 0 or (queues is not None and not queues) or (names is not None and not names):
        return []
    hint = LimitedQueues() if limited is None else limited
    now_us = to_us(now)
    lease_us = to_us(now + timedelta(seconds=lease_seconds))
    read = hint.stale()
    if read:
        hint.load(conn)
    if hint.applies(queues):
        return _claim_with_limits(
            conn, hint, worker_id, queues, names, limit, now_us, lease_us, now
        )
    sql = _claim_sql(None if queues is None else len(queues), None if names is None else len(names))
    params: list[Any] = [worker_id, now_us, lease_us, now_us, now_us]
    if queues is not None:
        params.extend(queues)
    if names is not None:
        params.extend(names)
    params.append(limit)
    jobs = [decode_job(row) for row in conn.execute(sql, params).fetchall()]
    if len(jobs) < limit and not read:
        # A short claim looks again at once (one read of a tiny table): another process may
        # have limited a queue whose jobs the statement above left out.
        hint.load(conn)
        if hint.applies(queues):
            jobs += _claim_with_limits(
                conn, hint, worker_id, queues, names, limit - len(jobs), now_us, lease_us, now
            )
    jobs.sort(key=claim_order)  # RETURNING order is not guaranteed
    return jobs


# A candidate for a claim: its sort key (claim order) and the token bucket it draws from.
_Bucket = tuple[str, str | None]  # (queue, JSON of the tenant, or None for the queue's own)
_Candidate = tuple[int, int, str, _Bucket | None]

_LIMITED_QUEUES = """
SELECT name, concurrency, rate, burst, per_tenant, tokens, tokens_at FROM queues
WHERE NOT paused AND (concurrency IS NOT NULL OR rate IS NOT NULL)
"""
_SAVE_TENANT_BUCKET = """
INSERT INTO queue_buckets (queue, tenant, tokens, tokens_at) VALUES (?, ?, ?, ?)
ON CONFLICT (queue, tenant) DO UPDATE SET tokens = excluded.tokens, tokens_at = excluded.tokens_at
"""


def _claim_with_limits(
    conn: sqlite3.Connection,
    hint: LimitedQueues,
    worker_id: str,
    queues: Collection[str] | None,
    names: Collection[str] | None,
    limit: int,
    now_us: int,
    lease_us: int,
    now: datetime,
) -> list[Job]:
    """Claim up to ``limit`` jobs, the limited queues' included, in one write transaction.

    Under ``BEGIN IMMEDIATE`` no other connection writes, so the running counts and token
    levels read here stay true until the claim commits: limits hold across processes.
    """
    name_sql = "" if names is None else f" AND name IN ({marks(len(names))})"
    name_params = [] if names is None else list(names)
    with write_transaction(conn):
        rows = conn.execute(_LIMITED_QUEUES).fetchall()
        hint.set(row[0] for row in rows)
        where, params = _filters(queues, names)
        candidates: list[_Candidate] = [
            (-priority, run_at, id_, None)
            for id_, priority, run_at in conn.execute(
                f"""
                SELECT id, priority, run_at FROM jobs
                WHERE {RUNNABLE} AND run_at <= ?{where} AND {_NOT_HELD}
                ORDER BY priority DESC, run_at, id LIMIT ?
                """,
                [now_us, *params, limit],
            )
        ]
        buckets: dict[_Bucket, TokenBucket] = {}
        for name, concurrency, rate, burst, per_tenant, tokens, tokens_at in rows:
            if queues is not None and name not in queues:
                continue
            config = decode_queue_config(name, concurrency, rate, burst, per_tenant)
            level = (
                None
                if tokens is None
                else TokenBucket(tokens=tokens, updated_at=from_us(tokens_at))
            )
            find = _tenant_candidates if config.per_tenant else _queue_candidates
            candidates += find(
                conn, config, level, buckets, limit, now, now_us, name_sql, name_params
            )
        candidates.sort()
        chosen = candidates[:limit]
        if not chosen:
            return []
        taken: dict[_Bucket, int] = {}
        for *_, bucket in chosen:
            if bucket is not None:
                taken[bucket] = taken.get(bucket, 0) + 1
        for (queue, tenant), n in taken.items():
            left = buckets[(queue, tenant)].take(n)
            if tenant is None:
                conn.execute(
                    "UPDATE queues SET tokens = ?, tokens_at = ? WHERE name = ?",
                    (left.tokens, to_us(left.updated_at), queue),
                )
            else:
                conn.execute(
                    _SAVE_TENANT_BUCKET, (queue, tenant, left.tokens, to_us(left.updated_at))
                )
        ids = dump_json([c[2] for c in chosen])
        claimed = conn.execute(
            f"""
            UPDATE jobs {_CLAIM_SET}
            WHERE id IN (SELECT value FROM json_each(?)) AND {RUNNABLE}
            RETURNING {JOB_SELECT}
            """,
            (worker_id, now_us, lease_us, now_us, ids),
        ).fetchall()
    jobs = [decode_job(row) for row in claimed]
    jobs.sort(key=claim_order)
    return jobs


_QUEUE_JOBS = f"""
SELECT id, priority, run_at, tenant FROM jobs
WHERE {RUNNABLE} AND run_at <= ? AND queue = ?{{names}}
ORDER BY priority DESC, run_at, id
"""


def _queue_candidates(
    conn: sqlite3.Connection,
    config: QueueConfig,
    level: TokenBucket | None,
    buckets: dict[_Bucket, TokenBucket],
    limit: int,
    now: datetime,
    now_us: int,
    name_sql: str,
    name_params: list[str],
) -> list[_Candidate]:
    """The jobs a queue-wide cap and bucket let start now, best first."""
    allowed = limit
    if config.concurrency is not None:
        (running,) = conn.execute(
            "SELECT count(*) FROM jobs WHERE state = 'running' AND queue = ?", (config.name,)
        ).fetchone()
        allowed = min(allowed, config.concurrency - running)
    bucket: _Bucket | None = None
    if config.rate is not None:
        bucket = (config.name, None)
        refilled = (level or TokenBucket.full(config, now)).refill(config, now)
        buckets[bucket] = refilled
        allowed = min(allowed, refilled.available())
    if allowed <= 0:
        return []
    rows = conn.execute(
        _QUEUE_JOBS.format(names=name_sql) + " LIMIT ?",
        [now_us, config.name, *name_params, allowed],
    )
    return [(-priority, run_at, id_, bucket) for id_, priority, run_at, _ in rows]


def _tenant_candidates(
    conn: sqlite3.Connection,
    config: QueueConfig,
    level: TokenBucket | None,
    buckets: dict[_Bucket, TokenBucket],
    limit: int,
    now: datetime,
    now_us: int,
    name_sql: str,
    name_params: list[str],
) -> list[_Candidate]:
    """The jobs each tenant's cap and bucket let start now, best first.

    Walks the queue's runnable jobs in claim order until ``limit`` are found; a tenant's
    allowance is worked out when its first job shows up.
    """
    running: dict[str | None, int] = {}
    if config.concurrency is not None:
        running = dict(
            conn.execute(
                "SELECT tenant, count(*) FROM jobs WHERE state = 'running' AND queue = ? "
                "GROUP BY tenant",
                (config.name,),
            ).fetchall()
        )
    stored: dict[str, TokenBucket] = {}
    if config.rate is not None:
        stored = {
            tenant: TokenBucket(tokens=tokens, updated_at=from_us(at))
            for tenant, tokens, at in conn.execute(
                "SELECT tenant, tokens, tokens_at FROM queue_buckets WHERE queue = ?",
                (config.name,),
            )
        }
    allowance: dict[str | None, int] = {}
    found: list[_Candidate] = []
    rows = conn.execute(_QUEUE_JOBS.format(names=name_sql), [now_us, config.name, *name_params])
    for id_, priority, run_at, tenant in rows:
        left = allowance.get(tenant)
        bucket: _Bucket | None = None
        if config.rate is not None:
            key = dump_json(tenant)  # "null" for no tenant: no tenant's name can collide
            bucket = (config.name, key)
        if left is None:
            left = limit
            if config.concurrency is not None:
                left = min(left, config.concurrency - running.get(tenant, 0))
            if bucket is not None:
                start = stored.get(key) or TokenBucket.full(config, now)
                refilled = buckets[bucket] = start.refill(config, now)
                left = min(left, refilled.available())
        if left > 0:
            found.append((-priority, run_at, id_, bucket))
            left -= 1
            if len(found) >= limit:
                break
        allowance[tenant] = left
    return found


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
    worker: WorkerInfo | None = None,
) -> set[str]:
    """See :meth:`dispatch_core.store.Store.heartbeat`."""
    until_us = to_us(now + timedelta(seconds=lease_seconds))
    now_us = to_us(now)
    items = list(leases.items())
    kept: set[str] = set()
    with contextlib.ExitStack() as stack:
        if (worker is not None and items) or len(items) > CHUNK:
            stack.enter_context(write_transaction(conn))  # the row and the leases together
        if worker is not None:
            alive = attrs.evolve(worker, last_seen=now, state=WorkerState.RUNNING)
            upsert_worker(conn, alive)
        for chunk in chunks(items):
            params: list[Any] = [until_us, now_us]
            for job_id, token in chunk:
                params += (job_id, token)
            kept.update(r[0] for r in conn.execute(_heartbeat_sql(len(chunk)), params).fetchall())
    return set(leases) - kept


def finish(conn: sqlite3.Connection, outcomes: Sequence[Outcome], *, now: datetime) -> list[bool]:
    """See :meth:`dispatch_core.store.Store.finish`."""
    if not outcomes:
        return []
    now_us = to_us(now)
    ids = [o.job_id for o in outcomes]
    if len(set(ids)) == len(ids) and all(o.kind is OutcomeKind.COMPLETED for o in outcomes):
        # The common case: one UPDATE ... FROM (VALUES ...) for the whole batch.
        if len(outcomes) <= CHUNK:
            done = _complete_many(conn, outcomes, now_us)
        else:
            with write_transaction(conn):
                done = set()
                for chunk in chunks(outcomes):
                    done |= _complete_many(conn, chunk, now_us)
        return [job_id in done for job_id in ids]
    # Mixed kinds (or one job twice): one statement per outcome, in order, in one transaction,
    # so a failure and its dead-letter entry land together.
    with write_transaction(conn):
        return [_finish_one(conn, o, now_us) for o in outcomes]


@lru_cache(maxsize=64)
def _complete_many_sql(n: int) -> str:
    return f"""
    UPDATE jobs SET state = 'completed', result = done.column3, finished_at = ?,
        updated_at = ?, {LEASE_FREE}
    FROM (VALUES {", ".join(["(?, ?, ?)"] * n)}) AS done
    WHERE jobs.id = done.column1 AND jobs.attempt_token = done.column2
      AND jobs.state = 'running'
    RETURNING jobs.id
    """


def _complete_many(conn: sqlite3.Connection, outcomes: Sequence[Outcome], now_us: int) -> set[str]:
    params: list[Any] = [now_us, now_us]
    for o in outcomes:
        params += (o.job_id, o.attempt_token, dump_json_opt(o.result))
    rows = conn.execute(_complete_many_sql(len(outcomes)), params).fetchall()
    return {r[0] for r in rows}


# Fencing: a write about an attempt lands only while that attempt holds the job.
_FENCE = "id = ? AND attempt_token = ? AND state = 'running'"
_COMPLETE_ONE = f"""
UPDATE jobs SET state = 'completed', result = ?, finished_at = ?, updated_at = ?, {LEASE_FREE}
WHERE {_FENCE}
"""
_RETRY_ONE = f"""
UPDATE jobs SET state = 'retrying', last_error = ?, run_at = ?, updated_at = ?, {LEASE_FREE}
WHERE {_FENCE}
"""
_FAIL_ONE = f"""
UPDATE jobs SET state = 'failed', last_error = ?, finished_at = ?, updated_at = ?, {LEASE_FREE}
WHERE {_FENCE}
"""
_RELEASE_ONE = f"""
UPDATE jobs SET state = 'pending', attempt = max(attempt - 1, 0), run_at = min(run_at, ?),
    updated_at = ?, {LEASE_FREE}
WHERE {_FENCE}
"""


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


# Copies the job row as it is now (failed, attempts counted) into the dead-letter queue.
_DEAD_LETTER = """
INSERT INTO dlq (id, job_id, name, queue, payload, error, attempts, max_attempts, priority,
                 timeout, tenant, headers, failed_at)
SELECT ?, id, name, queue, payload, ?, attempt, max_attempts, priority, timeout, tenant,
       headers, ?
FROM jobs WHERE id = ?
"""


_RESCUE_CHECK = "SELECT 1 FROM jobs WHERE state = 'running' AND lease_expires_at < ? LIMIT 1"
_GONE_WORKERS = "SELECT id FROM workers WHERE state IN ('dead', 'stopped')"
_RESCUE_CHECK_WORKERS = f"""
SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'running' AND lease_expires_at < :now)
    OR EXISTS (SELECT 1 FROM workers WHERE state = 'running' AND last_seen < :stale)
    OR EXISTS (SELECT 1 FROM jobs WHERE state = 'running' AND worker_id IN ({_GONE_WORKERS}))
"""
_MARK_DEAD = "UPDATE workers SET state = 'dead' WHERE state = 'running' AND last_seen < :stale"
# In SET, every column reference reads the row as it was before the update.
_RESCUE_SET = f"""
    state = CASE WHEN attempt >= max_attempts THEN 'failed' ELSE 'retrying' END,
    run_at = CASE WHEN attempt >= max_attempts THEN run_at ELSE :now END,
    finished_at = CASE WHEN attempt >= max_attempts THEN :now ELSE finished_at END,
    last_error = {{error}},
    updated_at = :now, {LEASE_FREE}
"""
# Why a job was taken back, by what its worker's row says: a crash reads as a crash.
_RESCUE_ERROR = """
CASE (SELECT state FROM workers WHERE workers.id = jobs.worker_id)
     WHEN 'dead' THEN 'worker ' || worker_id
                      || ' died: it sent no heartbeat within the worker timeout'
     WHEN 'stopped' THEN 'worker ' || worker_id
                         || ' stopped or restarted without finishing the job'
     ELSE 'worker ' || coalesce(worker_id, '?')
          || ' died or stalled: its lease expired without a heartbeat' END
"""
_RESCUE = f"""
UPDATE jobs SET {_RESCUE_SET.format(error=_RESCUE_ERROR)}
WHERE state = 'running' AND lease_expires_at < :now
RETURNING {JOB_SELECT}
"""
_RESCUE_WORKERS = f"""
UPDATE jobs SET {_RESCUE_SET.format(error=_RESCUE_ERROR)}
WHERE state = 'running' AND (lease_expires_at < :now OR worker_id IN ({_GONE_WORKERS}))
RETURNING {JOB_SELECT}
"""


def rescue_expired(
    conn: sqlite3.Connection, *, now: datetime, worker_timeout: float | None = None
) -> list[Job]:
    """See :meth:`dispatch_core.store.Store.rescue_expired`."""
    now_us = to_us(now)
    if worker_timeout is None:
        if conn.execute(_RESCUE_CHECK, (now_us,)).fetchone() is None:
            return []  # the usual case, answered without taking the write lock
        sql, params = _RESCUE, {"now": now_us}
    else:
        params = {"now": now_us, "stale": to_us(now - timedelta(seconds=worker_timeout))}
        if not conn.execute(_RESCUE_CHECK_WORKERS, params).fetchone()[0]:
            return []
        sql = _RESCUE_WORKERS
    with write_transaction(conn):
        if worker_timeout is not None:
            conn.execute(_MARK_DEAD, params)
        rescued = [decode_job(row) for row in conn.execute(sql, params).fetchall()]
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
    row = conn.execute(_NEXT_RUN_AT.format(filters=where), params).fetchone()
    return from_us_opt(row[0])


# A skip-scan of jobs_claim_idx (priority DESC, run_at, id, ...): the recursive part steps from
# one distinct priority to the next with one seek each, and within a priority the first matching
# entry holds its earliest run_at. So there is no index on run_at to maintain on the hot path,
# and no job row is read: the index covers the queue and name filters.
_NEXT_RUN_AT = f"""
WITH RECURSIVE priorities (p) AS (
    SELECT max(priority) FROM jobs WHERE {RUNNABLE}
    UNION ALL
    SELECT (SELECT max(priority) FROM jobs WHERE {RUNNABLE} AND priority < priorities.p)
    FROM priorities WHERE priorities.p IS NOT NULL
)
SELECT min((SELECT min(run_at) FROM jobs WHERE {RUNNABLE} AND priority = priorities.p{{filters}}))
FROM priorities WHERE priorities.p IS NOT NULL
"""
