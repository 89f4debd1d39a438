"""Every store operation as a plain function of a ``sqlite3`` connection.

The async :class:`~dispatch_plugins.sqlite.store.SQLiteStore` runs these functions on its
aiosqlite connection's thread (one thread hop per operation, however many statements it runs);
the blocking :class:`~dispatch_plugins.sqlite.sync.SQLiteSyncStore` calls them directly. So the
SQL and the row decoding exist once.

Connections are in autocommit mode: a lone statement is its own transaction; several writes
that must land together run inside :func:`~dispatch_plugins.sqlite.connection.write_transaction`.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, TypeVar, cast

import attrs

from dispatch_core._ids import new_id
from dispatch_core.cluster import WorkerInfo, WorkerState
from dispatch_core.cron import CronEntry
from dispatch_core.errors import (
    CronNotFoundError,
    DLQEntryNotFoundError,
    InvalidTransitionError,
    JobIdTakenError,
    JobNotFoundError,
    RunNotFoundError,
)
from dispatch_core.models import (
    JSON,
    DLQEntry,
    DLQFilter,
    Job,
    JobFilter,
    NewJob,
    Outcome,
    OutcomeKind,
    RunnableCount,
    SortOrder,
    ThroughputBucket,
    Truncated,
)
from dispatch_core.queues import QueueConfig, QueueStats, TokenBucket
from dispatch_core.states import JobState, check_transition
from dispatch_core.store import PruneCutoffs
from dispatch_core.workflows.models import (
    TERMINAL_RUN_STATES,
    NewEvent,
    NewRun,
    RunFilter,
    RunState,
    StepRecord,
    StepState,
    WorkflowEvent,
    WorkflowRun,
)
from dispatch_plugins.sqlite.codec import (
    CRON_COLUMNS,
    CRON_SELECT,
    DLQ_COLUMNS,
    DLQ_SELECT,
    EVENT_SELECT,
    JOB_COLUMNS,
    JOB_SELECT,
    RUN_COLUMNS,
    RUN_SELECT,
    STEP_COLUMNS,
    STEP_SELECT,
    WORKER_COLUMNS,
    WORKER_SELECT,
    claim_order,
    cron_params,
    decode_cron,
    decode_dlq,
    decode_event,
    decode_job,
    decode_queue_config,
    decode_run,
    decode_step,
    decode_worker,
    dump_json,
    dump_json_opt,
    from_us,
    from_us_opt,
    job_from_new,
    new_job_params,
    new_run_params,
    step_params,
    to_us,
    worker_params,
)
from dispatch_plugins.sqlite.connection import write_transaction
from dispatch_plugins.sqlite.schema import KEY_SCOPE

__all__ = [
    "LimitedQueues",
    "enqueue",
    "claim",
    "heartbeat",
    "finish",
    "rescue_expired",
    "next_run_at",
    "get_job",
    "list_jobs",
    "count_jobs",
    "count_runnable",
    "throughput",
    "cancel",
    "retry",
    "list_dlq",
    "count_dlq",
    "get_dlq",
    "replay_dlq",
    "purge_dlq",
    "register_worker",
    "deregister_worker",
    "list_workers",
    "acquire_leadership",
    "release_leadership",
    "get_leader",
    "upsert_cron",
    "list_cron",
    "get_cron",
    "set_cron_enabled",
    "fire_cron",
    "delete_cron",
    "set_queue",
    "pause_queue",
    "list_queues",
    "prune",
    "create_run",
    "get_run",
    "list_runs",
    "list_steps",
    "save_step",
    "update_run",
    "set_run_version",
    "send_event",
    "take_event",
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


def _where(equal: Iterable[tuple[str, object]]) -> tuple[list[str], list[Any]]:
    """``column = ?`` conditions and their parameters for the pairs whose value is given."""
    conditions: list[str] = []
    params: list[Any] = []
    for column, value in equal:
        if value is not None:
            conditions.append(f"{column} = ?")
            params.append(value)
    return conditions, params


def _page(
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


# -- producing -----------------------------------------------------------------------------------

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
_Key = tuple[str | None, str]


def enqueue(conn: sqlite3.Connection, jobs: Sequence[NewJob]) -> list[Job]:
    """Insert ``jobs`` in one transaction; a ``unique_key`` taken in the job's tenant yields
    the existing job. A taken id raises :class:`JobIdTakenError` and writes nothing."""
    if not jobs:
        return []
    try:
        if len(jobs) == 1 and jobs[0].unique_key is None:
            conn.execute(INSERT_JOB, new_job_params(jobs[0]))  # one statement: one transaction
            return [job_from_new(jobs[0])]
        keys = list({(j.tenant, j.unique_key): None for j in jobs if j.unique_key is not None})
        # Without unique keys the upsert clause is dead weight (~5% of a bulk insert).
        sql = _INSERT_JOB_UNLESS_KEY_TAKEN if keys else INSERT_JOB
        with write_transaction(conn):
            conn.executemany(sql, map(new_job_params, jobs))
            holders = _jobs_by_unique_key(conn, keys) if keys else {}
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
    for chunk in _chunks(ids):
        sql = f"SELECT id, tenant, unique_key FROM jobs WHERE id IN ({_marks(len(chunk))})"
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


def _insert_job(conn: sqlite3.Connection, job: NewJob) -> None:
    """Insert one job inside the caller's transaction; a unique key taken in the job's tenant
    skips it."""
    sql = INSERT_JOB if job.unique_key is None else _INSERT_JOB_UNLESS_KEY_TAKEN
    conn.execute(sql, new_job_params(job))


def _jobs_by_unique_key(conn: sqlite3.Connection, keys: Sequence[_Key]) -> dict[_Key, Job]:
    """The jobs holding ``keys``, each in its tenant. The lookup is by key (the index's
    first column); rows of other tenants that hold the same key are left out."""
    wanted = set(keys)
    names = list({key: None for _, key in keys})
    found: dict[_Key, Job] = {}
    for chunk in _chunks(names):
        rows = conn.execute(
            f"SELECT {JOB_SELECT} FROM jobs WHERE unique_key IN ({_marks(len(chunk))})", chunk
        ).fetchall()
        for row in rows:
            job = decode_job(row)
            key = (job.tenant, cast(str, job.unique_key))
            if key in wanted:
                found[key] = job
    return found


# -- the worker's hot path -----------------------------------------------------------------------


# A queue row that holds its jobs back from the one-statement claim: paused, or limited (its jobs
# are claimed by _claim_with_limits, which counts and charges them under the write lock).
_HELD = "(queues.paused OR queues.concurrency IS NOT NULL OR queues.rate IS NOT NULL)"
_NOT_HELD = f"NOT EXISTS (SELECT 1 FROM queues WHERE queues.name = jobs.queue AND {_HELD})"
_LIMITED_QUEUES = """
SELECT name, concurrency, rate, burst, per_tenant, tokens, tokens_at FROM queues
WHERE NOT paused AND (concurrency IS NOT NULL OR rate IS NOT NULL)
"""
_LIMITED_NAMES = """
SELECT name FROM queues WHERE NOT paused AND (concurrency IS NOT NULL OR rate IS NOT NULL)
"""
_CLAIM_SET = """
SET state = 'running', attempt = attempt + 1, worker_id = ?,
    attempt_token = lower(hex(randomblob(8))),
    started_at = ?, lease_expires_at = ?, updated_at = ?
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


@lru_cache(maxsize=64)
def _claim_sql(n_queues: int | None, n_names: int | None) -> str:
    queue_filter = "" if n_queues is None else f" AND queue IN ({_marks(n_queues)})"
    name_filter = "" if n_names is None else f" AND name IN ({_marks(n_names)})"
    # One statement: SQLite has a single writer, so two connections (or processes) running it
    # at once are serialised and never take the same row. The NOT EXISTS probe of the (small)
    # queues table keeps paused and limited queues out. The jobs are chosen from
    # jobs_claim_idx alone (it covers every column the subquery reads) and updated by rowid:
    # only the rows claimed are read, so no payload but theirs.
    return f"""
    UPDATE jobs {_CLAIM_SET}
    WHERE rowid IN (
        SELECT rowid FROM jobs
        WHERE {_RUNNABLE} AND run_at <= ?{queue_filter}{name_filter} AND {_NOT_HELD}
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
    name_sql = "" if names is None else f" AND name IN ({_marks(len(names))})"
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
                WHERE {_RUNNABLE} AND run_at <= ?{where} AND {_NOT_HELD}
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
            WHERE id IN (SELECT value FROM json_each(?)) AND {_RUNNABLE}
            RETURNING {JOB_SELECT}
            """,
            (worker_id, now_us, lease_us, now_us, ids),
        ).fetchall()
    jobs = [decode_job(row) for row in claimed]
    jobs.sort(key=claim_order)
    return jobs


_SAVE_TENANT_BUCKET = """
INSERT INTO queue_buckets (queue, tenant, tokens, tokens_at) VALUES (?, ?, ?, ?)
ON CONFLICT (queue, tenant) DO UPDATE SET tokens = excluded.tokens, tokens_at = excluded.tokens_at
"""
_QUEUE_JOBS = f"""
SELECT id, priority, run_at, tenant FROM jobs
WHERE {_RUNNABLE} AND run_at <= ? AND queue = ?{{names}}
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
        if (worker is not None and items) or len(items) > _CHUNK:
            stack.enter_context(write_transaction(conn))  # the row and the leases together
        if worker is not None:
            alive = attrs.evolve(worker, last_seen=now, state=WorkerState.RUNNING)
            conn.execute(_UPSERT_WORKER, worker_params(alive))
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
    updated_at = :now, {_LEASE_FREE}
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
    SELECT max(priority) FROM jobs WHERE {_RUNNABLE}
    UNION ALL
    SELECT (SELECT max(priority) FROM jobs WHERE {_RUNNABLE} AND priority < priorities.p)
    FROM priorities WHERE priorities.p IS NOT NULL
)
SELECT min((SELECT min(run_at) FROM jobs WHERE {_RUNNABLE} AND priority = priorities.p{{filters}}))
FROM priorities WHERE priorities.p IS NOT NULL
"""


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
    conditions, params = _where(
        (
            ("state", None if filter.state is None else filter.state.value),
            ("queue", filter.queue),
            ("name", filter.name),
            ("tenant", filter.tenant),
        )
    )
    if filter.preview is not None:
        return _previewed(
            conn, "jobs", JOB_COLUMNS, _JOB_BODIES, decode_job, filter, conditions, params
        )
    sql, params = _page(
        f"SELECT {JOB_SELECT} FROM jobs",
        conditions,
        params,
        after=filter.after,
        order=filter.order,
        limit=filter.limit,
        offset=filter.offset,
    )
    return [decode_job(row) for row in conn.execute(sql, params).fetchall()]


# -- previews in listings --------------------------------------------------------------------

_JOB_BODIES = ("payload", "result")
_DLQ_BODIES = ("payload",)
_RUN_BODIES = ("input", "output")
_Decoded = TypeVar("_Decoded", Job, DLQEntry, WorkflowRun)


@lru_cache(maxsize=64)
def _preview_select(
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


def _previewed(
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
    chosen as by :func:`_page`, then only those rows are read, with :func:`_preview_select`."""
    assert filter.preview is not None
    preview = filter.preview
    inner, params = _page(
        f"SELECT id FROM {table}",
        conditions,
        params,
        after=filter.after,
        order=filter.order,
        limit=filter.limit,
        offset=filter.offset,
    )
    order = "DESC" if filter.order is SortOrder.DESC else "ASC"
    select = _preview_select(table, columns, bodies, preview)
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


# One statement (one snapshot), one branch per partial index, each read from its index alone:
# a plain GROUP BY state would read every row of the table, payloads and results included, for
# a figure the dashboard asks for every two seconds. The branches split the jobs by state; the
# last relies on every terminal state being written with its finished_at (cancel, fail,
# complete and rescue all stamp it; only a retry, which leaves the terminal states, clears it).
_COUNT_JOBS = f"""
SELECT state, count(*) FROM jobs WHERE {_RUNNABLE}{{filters}} GROUP BY state
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
    conditions, params = _where((("queue", queue), ("tenant", tenant)))
    filters = "".join(f" AND {c}" for c in conditions)
    rows = conn.execute(_COUNT_JOBS.format(filters=filters), params * 3)
    return {JobState(state): n for state, n in rows.fetchall()}


# A read (never a write lock: it does not hold up claims in other processes). It walks
# jobs_claim_idx, the runnable rows only, and reads nothing else: the index covers queue,
# name, tenant and run_at. The exclusions are one JSON array, however many names. GROUP BY
# and ORDER BY use the BINARY collation: by code point, the order Python sorts strings in.
_COUNT_RUNNABLE = f"""
SELECT queue, name, count(*) FROM jobs
WHERE {_RUNNABLE} AND run_at <= :now{{tenant}}
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


def list_dlq(conn: sqlite3.Connection, filter: DLQFilter) -> list[DLQEntry]:
    """See :meth:`dispatch_core.store.Store.list_dlq`. Entry ids are TypeIDs made when the
    job failed, so id order is failure order; the pages walk the id index."""
    conditions, params = _where(
        (("queue", filter.queue), ("name", filter.name), ("tenant", filter.tenant))
    )
    conditions += _replayed(filter.replayed)
    if filter.preview is not None:
        return _previewed(
            conn, "dlq", DLQ_COLUMNS, _DLQ_BODIES, decode_dlq, filter, conditions, params
        )
    sql, params = _page(
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
    conditions, params = _where((("queue", queue), ("tenant", tenant)))
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
        conn.execute(INSERT_JOB, new_job_params(new))
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
    conditions, params = _where((("queue", queue), ("tenant", tenant)))
    where = " AND ".join(["failed_at < ?", *conditions])
    params = [to_us(before), *params]
    if limit is None:
        return conn.execute(f"DELETE FROM dlq WHERE {where}", params).rowcount
    sql = f"DELETE FROM dlq WHERE id IN (SELECT id FROM dlq WHERE {where} ORDER BY id LIMIT ?)"
    return conn.execute(sql, [*params, limit]).rowcount


# -- the cluster: workers and the leader ---------------------------------------------------------

_UPSERT_WORKER = f"""
INSERT INTO workers ({WORKER_SELECT}) VALUES ({_marks(len(WORKER_COLUMNS))})
ON CONFLICT (id) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in WORKER_COLUMNS[1:])}
"""


def register_worker(conn: sqlite3.Connection, worker: WorkerInfo) -> None:
    """See :meth:`dispatch_core.store.Store.register_worker`."""
    conn.execute(_UPSERT_WORKER, worker_params(worker))


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
INSERT INTO cron ({CRON_SELECT}) VALUES ({_marks(len(CRON_COLUMNS))})
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
        if job.unique_key is None:
            conn.execute(INSERT_JOB, new_job_params(job))
            fired = job_from_new(job)
        else:
            conn.execute(_INSERT_JOB_UNLESS_KEY_TAKEN, new_job_params(job))
            key = (job.tenant, job.unique_key)
            fired = _jobs_by_unique_key(conn, [key])[key]
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
            conn.execute(f"SELECT queue, count(*) FROM jobs WHERE {_RUNNABLE} GROUP BY queue")
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


# -- durable workflows ---------------------------------------------------------------------------
#
# Every write that decides on a run's state runs under BEGIN IMMEDIATE: SQLite's single writer
# then serialises a park (update_run) and an event (send_event) on one run, so the check "has
# the event already arrived?" and the park cannot interleave with the event's insert.

# A run whose id is taken is not written (DO NOTHING returns no row): the stored one stands.
_INSERT_RUN = f"""
INSERT INTO workflow_runs ({RUN_SELECT}) VALUES ({_marks(len(RUN_COLUMNS))})
ON CONFLICT (id) DO NOTHING
RETURNING {RUN_SELECT}
"""
_GET_RUN = f"SELECT {RUN_SELECT} FROM workflow_runs WHERE id = ?"


def create_run(conn: sqlite3.Connection, run: NewRun, driver: NewJob) -> WorkflowRun:
    """See :meth:`dispatch_core.store.Store.create_run`.

    One ``BEGIN IMMEDIATE`` transaction inserts the run and its driver; when the id exists
    already, neither is written and the stored run is returned.
    """
    with write_transaction(conn):
        row = conn.execute(_INSERT_RUN, new_run_params(run)).fetchone()
        if row is None:  # created before (a replay): the first creation stands
            return decode_run(conn.execute(_GET_RUN, (run.id,)).fetchone())
        created = decode_run(row)
        _insert_job(conn, driver)
    return created


def get_run(conn: sqlite3.Connection, run_id: str) -> WorkflowRun:
    """See :meth:`dispatch_core.store.Store.get_run`."""
    row = conn.execute(_GET_RUN, (run_id,)).fetchone()
    if row is None:
        raise RunNotFoundError(run_id)
    return decode_run(row)


def list_runs(conn: sqlite3.Connection, filter: RunFilter) -> list[WorkflowRun]:
    """See :meth:`dispatch_core.store.Store.list_runs`."""
    conditions, params = _where(
        (
            ("state", None if filter.state is None else filter.state.value),
            ("name", filter.name),
            ("tenant", filter.tenant),
            ("parent_run_id", filter.parent_run_id),
            ("correlation_key", filter.correlation_key),
        )
    )
    if filter.preview is not None:
        return _previewed(
            conn,
            "workflow_runs",
            RUN_COLUMNS,
            _RUN_BODIES,
            decode_run,
            filter,
            conditions,
            params,
        )
    sql, params = _page(
        f"SELECT {RUN_SELECT} FROM workflow_runs",
        conditions,
        params,
        after=filter.after,
        order=filter.order,
        limit=filter.limit,
        offset=filter.offset,
    )
    return [decode_run(row) for row in conn.execute(sql, params).fetchall()]


def list_steps(conn: sqlite3.Connection, run_id: str) -> list[StepRecord]:
    """See :meth:`dispatch_core.store.Store.list_steps`."""
    rows = conn.execute(
        f"SELECT {STEP_SELECT} FROM workflow_steps WHERE run_id = ? ORDER BY seq", (run_id,)
    ).fetchall()
    return [decode_step(row) for row in rows]


# A new seq is inserted; an existing pending record is replaced; a finished one is left alone
# (the WHERE of DO UPDATE fails, so nothing comes back and the caller reads the stored row).
_SAVE_STEP = f"""
INSERT INTO workflow_steps ({STEP_SELECT}) VALUES ({_marks(len(STEP_COLUMNS))})
ON CONFLICT (run_id, seq) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in STEP_COLUMNS[2:])}
WHERE workflow_steps.state = '{StepState.PENDING.value}'
RETURNING {STEP_SELECT}
"""


def _run_exists(conn: sqlite3.Connection, run_id: str) -> None:
    if conn.execute("SELECT 1 FROM workflow_runs WHERE id = ?", (run_id,)).fetchone() is None:
        raise RunNotFoundError(run_id)


def save_step(
    conn: sqlite3.Connection, run_id: str, step: StepRecord, *, now: datetime
) -> StepRecord:
    """See :meth:`dispatch_core.store.Store.save_step`."""
    with write_transaction(conn):
        _run_exists(conn, run_id)
        row = conn.execute(_SAVE_STEP, step_params(run_id, step)).fetchone()
        if row is None:  # finished already: the first writer's record stands
            row = conn.execute(
                f"SELECT {STEP_SELECT} FROM workflow_steps WHERE run_id = ? AND seq = ?",
                (run_id, step.seq),
            ).fetchone()
    return decode_step(row)


_PARKED = frozenset({RunState.SLEEPING, RunState.WAITING})
# An event of that name the run has not consumed yet.
_EVENT_WAITING = """
SELECT 1 FROM workflow_events WHERE run_id = ? AND name = ? AND consumed_seq IS NULL LIMIT 1
"""
_UPDATE_RUN = f"""
UPDATE workflow_runs SET state = :state, output = :output, error = :error, wake_at = :wake_at,
    waiting_for = :waiting_for, updated_at = :now, finished_at = :finished_at,
    generation = generation + :parked
WHERE id = :id
RETURNING {RUN_SELECT}
"""


def update_run(
    conn: sqlite3.Connection,
    run_id: str,
    *,
    state: RunState,
    now: datetime,
    expect: frozenset[RunState] | None = None,
    generation: int | None = None,
    output: object = None,
    error: str | None = None,
    wake_at: datetime | None = None,
    waiting_for: str | None = None,
    driver: NewJob | None = None,
) -> WorkflowRun | None:
    """See :meth:`dispatch_core.store.Store.update_run`.

    One ``BEGIN IMMEDIATE`` transaction reads the run, checks the condition (and, for a wait,
    that its event has not arrived yet), writes the run and enqueues ``driver``.
    """
    now_us = to_us(now)
    with write_transaction(conn):
        row = conn.execute(
            "SELECT state, generation FROM workflow_runs WHERE id = ?", (run_id,)
        ).fetchone()
        if row is None:
            raise RunNotFoundError(run_id)
        current, current_generation = RunState(row[0]), row[1]
        if (current in TERMINAL_RUN_STATES) if expect is None else (current not in expect):
            return None
        if generation is not None and current_generation != generation:
            return None
        if (
            state is RunState.WAITING
            and waiting_for is not None
            and conn.execute(_EVENT_WAITING, (run_id, waiting_for)).fetchone() is not None
        ):
            return None  # the event is here: the caller takes it instead of parking
        params = {
            "id": run_id,
            "state": state.value,
            "output": dump_json_opt(cast(JSON, output)),
            "error": error,
            "wake_at": None if wake_at is None else to_us(wake_at),
            "waiting_for": waiting_for,
            "now": now_us,
            "finished_at": now_us if state in TERMINAL_RUN_STATES else None,
            "parked": int(state in _PARKED),
        }
        updated = decode_run(conn.execute(_UPDATE_RUN, params).fetchone())
        if driver is not None:
            _insert_job(conn, driver)
    return updated


_TERMINAL_RUN_VALUES = ", ".join(f"'{state.value}'" for state in sorted(TERMINAL_RUN_STATES))
# The compare-and-set on the generation; a terminal run is left alone.
_SET_RUN_VERSION = f"""
UPDATE workflow_runs SET version = ?, updated_at = ?
WHERE id = ? AND generation = ? AND state NOT IN ({_TERMINAL_RUN_VALUES})
RETURNING {RUN_SELECT}
"""


def set_run_version(
    conn: sqlite3.Connection, run_id: str, version: int, *, generation: int, now: datetime
) -> WorkflowRun | None:
    """See :meth:`dispatch_core.store.Store.set_run_version`.

    One ``BEGIN IMMEDIATE`` transaction: a conditional ``UPDATE``; when it matches nothing,
    the run is looked up only to tell an unknown run (an error) from a failed condition.
    """
    with write_transaction(conn):
        row = conn.execute(_SET_RUN_VERSION, (version, to_us(now), run_id, generation)).fetchone()
        if row is None:
            _run_exists(conn, run_id)
            return None
    return decode_run(row)


_INSERT_EVENT = """
INSERT INTO workflow_events (id, run_id, name, payload, created_at, tenant)
VALUES (?, ?, ?, ?, ?, ?)
"""
# The woken run is running again: nothing to wait for, no timer.
_WAKE_RUN = """
UPDATE workflow_runs SET state = 'running', waiting_for = NULL, wake_at = NULL, updated_at = ?
WHERE id = ?
"""
# The wait's timeout timer, made due now (a running or finished one is left alone): the
# park's key in the run's tenant, where its drivers hold it.
_MAKE_DUE = f"""
UPDATE jobs SET run_at = ?, updated_at = ?
WHERE unique_key = ? AND {KEY_SCOPE} = coalesce('=' || ?, '') AND state = 'pending'
"""


def send_event(conn: sqlite3.Connection, event: NewEvent, *, driver: NewJob, now: datetime) -> bool:
    """See :meth:`dispatch_core.store.Store.send_event`.

    One ``BEGIN IMMEDIATE`` transaction: it stores the event and, when the run waits for it,
    wakes the run and makes its wake-up job due (the pending timeout timer, else ``driver``).
    """
    now_us = to_us(now)
    with write_transaction(conn):
        row = conn.execute(
            "SELECT tenant, state, waiting_for, generation FROM workflow_runs WHERE id = ?",
            (event.run_id,),
        ).fetchone()
        if row is None or row[0] != event.tenant:
            raise RunNotFoundError(event.run_id)
        _, state, waiting_for, generation = row
        conn.execute(
            _INSERT_EVENT,
            (
                event.id,
                event.run_id,
                event.name,
                dump_json(event.payload),
                to_us(event.created_at),
                event.tenant,
            ),
        )
        if state != RunState.WAITING.value or waiting_for != event.name:
            return False
        conn.execute(_WAKE_RUN, (now_us, event.run_id))
        key = f"wf:{event.run_id}:{generation}"
        if conn.execute(_MAKE_DUE, (now_us, now_us, key, event.tenant)).rowcount == 0:
            # No pending timer: the driver, under the park's key (skipped if the key is taken:
            # a job of this park is already running or done, and the run is driven).
            _insert_job(conn, attrs.evolve(driver, unique_key=key))
    return True


_EVENT_BY_SEQ = f"""
SELECT {EVENT_SELECT} FROM workflow_events WHERE run_id = ? AND name = ? AND consumed_seq = ?
LIMIT 1
"""
_TAKE_EVENT = f"""
UPDATE workflow_events SET consumed_seq = ?
WHERE rowid = (
    SELECT rowid FROM workflow_events
    WHERE run_id = ? AND name = ? AND consumed_seq IS NULL
    ORDER BY created_at, rowid LIMIT 1
)
RETURNING {EVENT_SELECT}
"""


def take_event(
    conn: sqlite3.Connection, run_id: str, name: str, *, seq: int, now: datetime
) -> WorkflowEvent | None:
    """See :meth:`dispatch_core.store.Store.take_event`.

    The replay lookup and the take run in one write transaction, so two drivers taking for one
    seq at once get the same event rather than one each.
    """
    with write_transaction(conn):
        row = conn.execute(_EVENT_BY_SEQ, (run_id, name, seq)).fetchone()
        if row is None:
            row = conn.execute(_TAKE_EVENT, (seq, run_id, name)).fetchone()
    return None if row is None else decode_event(row)
