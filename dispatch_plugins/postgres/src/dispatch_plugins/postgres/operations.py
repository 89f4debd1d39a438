"""Every store operation, written once as a generator of SQL steps.

An operation is a generator function: it yields :class:`Stmt` (a statement; the runner sends
back the fetched rows, or the row count) and :class:`Copy` (a binary ``COPY ... FROM STDIN``)
steps, and returns the operation's result. It does no I/O itself, so the same code runs on an
``AsyncConnection`` (:func:`~dispatch_plugins.postgres.connection.run_async`, for
:class:`~dispatch_plugins.postgres.store.PostgresStore`) and on a blocking ``Connection``
(:func:`~dispatch_plugins.postgres.connection.run_sync`, for
:class:`~dispatch_plugins.postgres.sync.PostgresSyncStore`), whether that connection is one of
the store's pool or the caller's (transactional enqueue).

The store's own connections are in autocommit mode, and almost every operation is a single
statement (data-modifying CTEs keep a failure and its dead-letter entry, or a rescue and its
entries, in one statement), so one round trip is one transaction. An operation that needs
several statements in one transaction yields :data:`TRANSACTION` first; on a caller's
connection that marker is ignored: the caller's transaction is the transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Generator, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Final, TypeVar

import attrs

from dispatch_core._ids import new_id
from dispatch_core.errors import DLQEntryNotFoundError, InvalidTransitionError, JobNotFoundError
from dispatch_core.models import DLQEntry, Job, JobFilter, NewJob, Outcome, OutcomeKind
from dispatch_core.states import TRANSITIONS, JobState, check_transition
from dispatch_plugins.postgres.codec import (
    COPY_COLUMNS,
    COPY_TYPES,
    DLQ_SELECT,
    INSERT_COLUMNS,
    JOB_COLUMNS,
    JOB_SELECT,
    aware,
    claim_order,
    clean_text,
    copy_row,
    decode_dlq,
    decode_job,
    encode_result,
    job_from_new,
    new_job_columns,
    new_job_params,
    to_utc,
)
from dispatch_plugins.postgres.schema import RUNNABLE

__all__ = [
    "Stmt",
    "Copy",
    "TRANSACTION",
    "Steps",
    "Statements",
    "statements",
    "RELAXED",
    "COPY_MIN_ROWS",
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

T = TypeVar("T")


@attrs.frozen(slots=True)
class Stmt:
    """One statement. The runner sends back its rows (``rows=True``) or its row count."""

    sql: str
    params: Sequence[Any] | Mapping[str, Any] | None = None
    rows: bool = False


@attrs.frozen(slots=True)
class Copy:
    """A binary ``COPY ... FROM STDIN`` of ``rows`` typed as ``types``. Sends back ``None``."""

    sql: str
    types: Sequence[str]
    rows: Iterable[Sequence[Any]]


class _Transaction:
    def __repr__(self) -> str:
        return "TRANSACTION"


#: Yielded first by an operation whose statements must commit together.
TRANSACTION: Final = _Transaction()

#: What an operation yields; the runner sends back rows, a row count or ``None``.
Step = Stmt | Copy | _Transaction
Steps = Generator[Step, Any, T]

#: From this many jobs without unique keys, an enqueue goes through binary COPY (a few more
#: round trips, but a third of the cost per row of ``INSERT ... SELECT FROM unnest``).
COPY_MIN_ROWS = 200

#: Joined into the FROM clause of the worker's hot-path writes (claim, heartbeat, finish,
#: rescue): ``set_config(..., true)`` lasts until the end of the statement's own transaction,
#: so that commit does not wait for the WAL to reach the disk (``synchronous_commit = off``)
#: while every other write (enqueue above all) stays fully durable. What a server crash can
#: lose is the last fraction of a second of these writes, and each loss only makes a job run
#: again: a lost claim or heartbeat leaves a lease that the worker's later writes are fenced
#: out of; a lost outcome leaves the job running until its lease expires and it is rescued.
#: The worker's guarantee is at-least-once anyway (a worker can die after its handler and
#: before the outcome is written). Any later durable commit makes them durable too (the WAL
#: is flushed in order). ``?worker_synchronous_commit=on`` turns this off.
RELAXED = "(SELECT set_config('synchronous_commit', 'off', true)) AS relaxed"

# Fencing: a write about an attempt lands only while that attempt holds the job.
_LEASE_FREE = "worker_id = NULL, attempt_token = NULL, lease_expires_at = NULL"
_NCOLS = len(JOB_COLUMNS)
#: At most this many expired leases are rescued per call; the next call takes the rest.
_RESCUE_BATCH = 5000


def _sources_of(target: JobState, *, exclude: Collection[JobState] = ()) -> str:
    """SQL list of the states from which ``target`` may be reached, per the transition table."""
    states = sorted(s.value for s, to in TRANSITIONS.items() if target in to and s not in exclude)
    return ", ".join(f"'{s}'" for s in states)


class Statements:
    """The SQL of every operation, for one schema (built once per store).

    Args:
        schema: The schema holding the tables (a plain lowercase identifier).
        relaxed_worker_commits: Commit the worker's hot-path writes (claim, heartbeat,
            finish, rescue) without waiting for the WAL flush; see :data:`RELAX`.
    """

    def __init__(self, schema: str, relaxed_worker_commits: bool = True) -> None:
        s = f'"{schema}"'
        self.schema = schema
        self.relaxed_worker_commits = relaxed_worker_commits
        # Joined into the hot-path writes' FROM clause when their commits are relaxed.
        relax = f",\n    {RELAXED}" if relaxed_worker_commits else ""
        self._claim_from = f"\nFROM {RELAXED}" if relaxed_worker_commits else ""
        self.quoted_schema = s
        self.jobs = jobs = f"{s}.jobs"
        self.dlq = dlq = f"{s}.dlq"
        self.channel = channel = f"dispatch_{schema}"
        #: Queues a wake-up for every listener, delivered when the transaction commits.
        self.notify = notify = f"pg_notify('{channel}', '')"
        cols = ", ".join(INSERT_COLUMNS)

        # -- producing ------------------------------------------------------------------------
        values = "%s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb"
        self.insert_one = (
            f"WITH ins AS (INSERT INTO {jobs} ({cols}) VALUES ({values}))\nSELECT {notify}::text"
        )
        # A taken key skips the row; the caller then reads the row that holds the key. The
        # scalar subquery is evaluated once, and only if a row was inserted.
        on_conflict = "ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING"
        self.insert_one_unique = (
            f"WITH ins AS (INSERT INTO {jobs} ({cols}) VALUES ({values})\n"
            f"    {on_conflict} RETURNING id)\n"
            f"SELECT id, (SELECT {notify}::text) FROM ins"
        )
        unnest = (
            "SELECT id, name, queue, payload::jsonb, priority, max_attempts, timeout, run_at,\n"
            "       created_at, created_at, unique_key, tenant, headers::jsonb\n"
            "FROM unnest(%(id)b::text[], %(name)b::text[], %(queue)b::text[],\n"
            "            %(payload)b::text[], %(priority)b::int4[], %(max_attempts)b::int4[],\n"
            "            %(timeout)b::float8[], %(run_at)b::timestamptz[],\n"
            "            %(created_at)b::timestamptz[], %(unique_key)b::text[],\n"
            "            %(tenant)b::text[], %(headers)b::text[])\n"
            "    AS t(id, name, queue, payload, priority, max_attempts, timeout, run_at,\n"
            "         created_at, unique_key, tenant, headers)"
        )
        self.insert_many = (
            f"WITH ins AS (INSERT INTO {jobs} ({cols})\n{unnest})\nSELECT {notify}::text"
        )
        self.insert_many_unique = (
            f"WITH ins AS (INSERT INTO {jobs} ({cols})\n{unnest}\n"
            f"    {on_conflict} RETURNING id)\n"
            f"SELECT id, (SELECT {notify}::text) FROM ins"
        )
        self.copy_jobs = f"COPY {jobs} ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        self.notify_only = f"SELECT {notify}::text"
        self.jobs_by_unique_key = (
            f"SELECT {JOB_SELECT} FROM {jobs} WHERE unique_key = ANY(%b::text[])"
        )

        # -- the worker's hot path ------------------------------------------------------------
        self.heartbeat = (
            f"UPDATE {jobs} AS j SET lease_expires_at = %(until)b, updated_at = %(now)b\n"
            f"FROM unnest(%(ids)b::text[], %(tokens)b::text[]) AS l(id, token){relax}\n"
            "WHERE j.id = l.id AND j.attempt_token = l.token AND j.state = 'running'\n"
            "RETURNING j.id"
        )
        # Every outcome kind in one statement: the UPDATE writes the fenced rows, the INSERT
        # dead-letters the failed ones from what the UPDATE returned (the row as it is now:
        # failed, attempts counted), in the same statement, hence the same transaction.
        finish = f"""
WITH o AS (
    SELECT * FROM unnest(%(ids)b::text[], %(tokens)b::text[], %(kinds)b::text[],
                         %(errors)b::text[], %(results)b::text[], %(run_ats)b::timestamptz[],
                         %(dlq_ids)b::text[])
        AS o(id, token, kind, error, result, run_at, dlq_id)
), done AS (
    UPDATE {jobs} AS j SET
        state = CASE o.kind WHEN 'completed' THEN 'completed' WHEN 'retry' THEN 'retrying'
                            WHEN 'fail' THEN 'failed' ELSE 'pending' END,
        attempt = CASE WHEN o.kind = 'release' THEN greatest(j.attempt - 1, 0)
                       ELSE j.attempt END,
        result = CASE WHEN o.kind = 'completed' THEN o.result::jsonb ELSE j.result END,
        last_error = CASE WHEN o.kind IN ('retry', 'fail') THEN o.error ELSE j.last_error END,
        run_at = CASE o.kind WHEN 'retry' THEN coalesce(o.run_at, %(now)b)
                             WHEN 'release' THEN least(j.run_at, %(now)b)
                             ELSE j.run_at END,
        finished_at = CASE WHEN o.kind IN ('completed', 'fail') THEN %(now)b
                           ELSE j.finished_at END,
        updated_at = %(now)b, {_LEASE_FREE}
    FROM o{relax}
    WHERE j.id = o.id AND j.attempt_token = o.token AND j.state = 'running'
    RETURNING j.id, o.token, o.kind, o.dlq_id, o.error, j.name, j.queue, j.payload, j.attempt,
              j.max_attempts, j.priority, j.timeout, j.tenant, j.headers
), dead AS (
    INSERT INTO {dlq} (id, job_id, name, queue, payload, error, attempts, max_attempts,
                       priority, timeout, tenant, headers, failed_at)
    SELECT dlq_id, id, name, queue, payload, coalesce(error, ''), attempt, max_attempts,
           priority, timeout, tenant, headers, %(now)b
    FROM done WHERE kind = 'fail'
)
"""
        self.finish = finish + "SELECT id, token FROM done"
        # RETRY and RELEASE make jobs runnable: wake the other workers too.
        self.finish_notify = finish + f"SELECT id, token, (SELECT {notify}::text) FROM done"
        self.rescue_candidates = (
            f"SELECT id FROM {jobs} WHERE state = 'running' AND lease_expires_at < %(now)b\n"
            f"ORDER BY lease_expires_at LIMIT {_RESCUE_BATCH}"
        )
        # Rows another transaction holds (a finishing worker, a concurrent rescuer) are
        # skipped rather than waited for: no deadlock, and the next round takes them if
        # they are still expired.
        exhausted = "j.attempt >= j.max_attempts"
        self.rescue = f"""
WITH c AS (
    SELECT j.id, x.dlq_id
    FROM {jobs} AS j
    JOIN unnest(%(ids)b::text[], %(dlq_ids)b::text[]) AS x(id, dlq_id) ON j.id = x.id
    WHERE j.state = 'running' AND j.lease_expires_at < %(now)b
    FOR UPDATE OF j SKIP LOCKED
), r AS (
    UPDATE {jobs} AS j SET
        state = CASE WHEN {exhausted} THEN 'failed' ELSE 'retrying' END,
        run_at = CASE WHEN {exhausted} THEN j.run_at ELSE %(now)b END,
        finished_at = CASE WHEN {exhausted} THEN %(now)b ELSE j.finished_at END,
        last_error = 'lease expired: worker ' || coalesce(j.worker_id, 'None')
                     || ' stopped heartbeating',
        updated_at = %(now)b, {_LEASE_FREE}
    FROM c{relax}
    WHERE j.id = c.id
    RETURNING c.dlq_id, {", ".join(f"j.{c}" for c in JOB_SELECT.split(", "))}
), dead AS (
    INSERT INTO {dlq} (id, job_id, name, queue, payload, error, attempts, max_attempts,
                       priority, timeout, tenant, headers, failed_at)
    SELECT dlq_id, id, name, queue, payload, last_error, attempt, max_attempts, priority,
           timeout, tenant, headers, %(now)b
    FROM r WHERE state = 'failed'
)
SELECT {JOB_SELECT}, (SELECT {notify}::text) FROM r
"""

        # -- inspection and control -----------------------------------------------------------
        self.get_job = f"SELECT {JOB_SELECT} FROM {jobs} WHERE id = %s"
        self.job_state = f"SELECT state FROM {jobs} WHERE id = %s"
        self.cancel = (
            f"UPDATE {jobs} SET state = 'cancelled', finished_at = %(now)b,\n"
            f"    updated_at = %(now)b, {_LEASE_FREE}\n"
            f"WHERE id = %(id)s AND state IN ({_sources_of(JobState.CANCELLED)})\n"
            f"RETURNING {JOB_SELECT}"
        )
        # RUNNING -> PENDING is the shutdown release, never a manual retry.
        retry_from = _sources_of(JobState.PENDING, exclude=[JobState.RUNNING])
        self.retry = (
            f"WITH r AS (\n"
            f"    UPDATE {jobs} SET state = 'pending', attempt = 0, run_at = %(now)b,\n"
            f"        updated_at = %(now)b, finished_at = NULL, last_error = NULL\n"
            f"    WHERE id = %(id)s AND state IN ({retry_from})\n"
            f"    RETURNING {JOB_SELECT})\n"
            f"SELECT {JOB_SELECT}, (SELECT {notify}::text) FROM r"
        )
        self.count_all = f"SELECT state, count(*) FROM {jobs} GROUP BY state"
        self.count_queue = f"SELECT state, count(*) FROM {jobs} WHERE queue = %s GROUP BY state"

        # -- the dead-letter queue ------------------------------------------------------------
        self.get_dlq = f"SELECT {DLQ_SELECT} FROM {dlq} WHERE id = %s"
        self.list_dlq_all = (
            f"SELECT {DLQ_SELECT} FROM {dlq} ORDER BY failed_at, id LIMIT %s OFFSET %s"
        )
        self.list_dlq_queue = (
            f"SELECT {DLQ_SELECT} FROM {dlq} WHERE queue = %s\n"
            "ORDER BY failed_at, id LIMIT %s OFFSET %s"
        )
        # Stamping the entry and inserting its copy are one statement: the insert happens only
        # if the entry still exists.
        self.replay = (
            f"WITH e AS (\n"
            f"    UPDATE {dlq} SET replayed_at = %(now)b, replay_job_id = %(id)s\n"
            f"    WHERE id = %(entry)s RETURNING id\n"
            f"), ins AS (\n"
            f"    INSERT INTO {jobs} ({cols})\n"
            f"    SELECT %(id)s, %(name)s, %(queue)s, %(payload)s::jsonb, %(priority)s,\n"
            f"           %(max_attempts)s, %(timeout)s, %(run_at)b, %(created_at)b,\n"
            f"           %(created_at)b, %(unique_key)s, %(tenant)s, %(headers)s::jsonb\n"
            f"    FROM e RETURNING id\n"
            f")\n"
            f"SELECT id, (SELECT {notify}::text) FROM ins"
        )
        self.purge_dlq = f"DELETE FROM {dlq} WHERE failed_at < %b"

    @lru_cache(maxsize=8)  # noqa: B019 -- one Statements per schema, kept for the process
    def claim(self, by_queue: bool, by_name: bool) -> str:
        """The claim statement, with or without the queue and name filters."""
        filters = _filters(by_queue, by_name)
        # One statement. The sub-select locks the first runnable rows in claim order, skipping
        # rows another claimer holds (SKIP LOCKED re-checks each locked row against the WHERE),
        # and ARRAY(...) makes it run once, before the UPDATE looks the ids up by primary key.
        return f"""
UPDATE {self.jobs} AS j
SET state = 'running', attempt = j.attempt + 1, worker_id = %(worker_id)s,
    attempt_token = gen_random_uuid()::text, started_at = %(now)b,
    lease_expires_at = %(until)b, updated_at = %(now)b{self._claim_from}
WHERE j.id = ANY(ARRAY(
    SELECT id FROM {self.jobs}
    WHERE {RUNNABLE} AND run_at <= %(now)b{filters}
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED))
RETURNING {JOB_SELECT}
"""

    @lru_cache(maxsize=8)  # noqa: B019
    def next_run_at(self, by_queue: bool, by_name: bool) -> str:
        """The earliest run_at among runnable jobs, with or without the filters.

        ``ORDER BY ... LIMIT 1`` rather than ``min()``: it walks jobs_due_idx in order and stops
        at the first match, which the planner does not always see for ``min()`` with filters.
        """
        return (
            f"SELECT run_at FROM {self.jobs}\n"
            f"WHERE {RUNNABLE}{_filters(by_queue, by_name)}\n"
            "ORDER BY run_at LIMIT 1"
        )

    @lru_cache(maxsize=32)  # noqa: B019
    def list_jobs(self, columns: tuple[str, ...]) -> str:
        """Jobs filtered by equality on ``columns``, newest id first, paged."""
        where = " AND ".join(f"{c} = %s" for c in columns)
        return (
            f"SELECT {JOB_SELECT} FROM {self.jobs}{' WHERE ' + where if where else ''}\n"
            "ORDER BY id DESC LIMIT %s OFFSET %s"
        )


def _filters(by_queue: bool, by_name: bool) -> str:
    sql = " AND queue = ANY(%(queues)b::text[])" if by_queue else ""
    return sql + (" AND name = ANY(%(names)b::text[])" if by_name else "")


@lru_cache(maxsize=16)
def statements(schema: str, relaxed_worker_commits: bool = True) -> Statements:
    """The (cached) :class:`Statements` of ``schema``."""
    return Statements(schema, relaxed_worker_commits)


# -- producing -------------------------------------------------------------------------------


def enqueue(q: Statements, jobs: Sequence[NewJob]) -> Steps[list[Job]]:
    """Insert ``jobs`` and wake the listeners when the transaction commits; a taken
    ``unique_key`` yields the job that holds it.

    One statement for one job or a batch (``INSERT ... SELECT FROM unnest``); a large batch
    without unique keys goes through binary ``COPY`` and ``pg_notify`` in one transaction.
    """
    if not jobs:
        return []
    if not any(j.unique_key is not None for j in jobs):
        if len(jobs) == 1:
            yield Stmt(q.insert_one, new_job_params(jobs[0]))
        elif len(jobs) < COPY_MIN_ROWS:
            yield Stmt(q.insert_many, new_job_columns(jobs))
        else:
            yield TRANSACTION
            yield Copy(q.copy_jobs, COPY_TYPES, map(copy_row, jobs))
            yield Stmt(q.notify_only)
        return [job_from_new(new) for new in jobs]
    return (yield from _enqueue_unique(q, jobs))


def _enqueue_unique(q: Statements, jobs: Sequence[NewJob]) -> Steps[list[Job]]:
    out: list[Job | None] = [None] * len(jobs)
    todo = list(range(len(jobs)))
    # Normally one round: the insert, plus one read when a key was taken. Another round only if
    # a key's holder vanished between the two (a job deleted by hand meanwhile).
    for _ in range(5):
        batch = [jobs[i] for i in todo]
        if len(batch) == 1:
            rows = yield Stmt(q.insert_one_unique, new_job_params(batch[0]), rows=True)
        else:
            rows = yield Stmt(q.insert_many_unique, new_job_columns(batch), rows=True)
        inserted = {row[0] for row in rows}
        taken: dict[str, None] = {}
        for i in todo:
            new = jobs[i]
            if new.id in inserted:
                out[i] = job_from_new(new)
            else:
                assert new.unique_key is not None  # a job without a key is always inserted
                taken[new.unique_key] = None
        if not taken:
            break
        rows = yield Stmt(q.jobs_by_unique_key, (list(taken),), rows=True)
        holders = {job.unique_key: job for job in map(decode_job, rows)}
        todo = [i for i in todo if out[i] is None and jobs[i].unique_key not in holders]
        for i, new in enumerate(jobs):
            if out[i] is None and new.unique_key in holders:
                out[i] = holders[new.unique_key]
        if not todo:
            break
    else:
        raise RuntimeError("enqueue: the holders of unique keys kept vanishing; giving up")
    return [job for job in out if job is not None]


# -- the worker's hot path ---------------------------------------------------------------------


def claim(
    q: Statements,
    *,
    worker_id: str,
    queues: Collection[str] | None,
    names: Collection[str] | None,
    limit: int,
    lease_seconds: float,
    now: datetime,
) -> Steps[list[Job]]:
    """See :meth:`dispatch_core.store.Store.claim`."""
    if limit <= 0 or (queues is not None and not queues) or (names is not None and not names):
        return []
    now = aware(now)
    params: dict[str, Any] = {
        "worker_id": worker_id,
        "now": now,
        "until": now + timedelta(seconds=lease_seconds),
        "limit": limit,
    }
    if queues is not None:
        params["queues"] = list(queues)
    if names is not None:
        params["names"] = list(names)
    rows = yield Stmt(q.claim(queues is not None, names is not None), params, rows=True)
    jobs = [decode_job(row) for row in rows]
    jobs.sort(key=claim_order)  # RETURNING order is not the claim order
    return jobs


def heartbeat(
    q: Statements, *, leases: Mapping[str, str], lease_seconds: float, now: datetime
) -> Steps[set[str]]:
    """See :meth:`dispatch_core.store.Store.heartbeat`."""
    if not leases:
        return set()
    now = aware(now)
    items = sorted(leases.items())  # one lock order for every writer: fewer deadlocks
    rows = yield Stmt(
        q.heartbeat,
        {
            "ids": [job_id for job_id, _ in items],
            "tokens": [token for _, token in items],
            "until": now + timedelta(seconds=lease_seconds),
            "now": now,
        },
        rows=True,
    )
    return set(leases) - {row[0] for row in rows}


def finish(q: Statements, outcomes: Sequence[Outcome], *, now: datetime) -> Steps[list[bool]]:
    """See :meth:`dispatch_core.store.Store.finish`: one statement for the whole batch."""
    if not outcomes:
        return []
    now = aware(now)
    # A written outcome frees the job's token, so of several outcomes for one attempt only the
    # first can be written (as if they were applied in order); later ones are refused unsent.
    first: dict[tuple[str, str], int] = {}
    for i, o in enumerate(outcomes):
        first.setdefault((o.job_id, o.attempt_token), i)
    sent = sorted(first)  # one lock order for every writer: fewer deadlocks
    by_pair = {pair: outcomes[i] for pair, i in first.items()}
    ids: list[str] = []
    tokens: list[str] = []
    kinds: list[str] = []
    errors: list[str | None] = []
    results: list[str | None] = []
    run_ats: list[datetime | None] = []
    dlq_ids: list[str | None] = []
    wake = False
    for pair in sent:
        o = by_pair[pair]
        ids.append(o.job_id)
        tokens.append(o.attempt_token)
        kinds.append(o.kind.value)
        errors.append(clean_text(o.error))
        results.append(encode_result(o.result) if o.kind is OutcomeKind.COMPLETED else None)
        run_ats.append(None if o.run_at is None else aware(o.run_at))
        dlq_ids.append(new_id("dlq") if o.kind is OutcomeKind.FAIL else None)
        wake = wake or o.kind is OutcomeKind.RETRY or o.kind is OutcomeKind.RELEASE
    rows = yield Stmt(
        q.finish_notify if wake else q.finish,
        {
            "ids": ids,
            "tokens": tokens,
            "kinds": kinds,
            "errors": errors,
            "results": results,
            "run_ats": run_ats,
            "dlq_ids": dlq_ids,
            "now": now,
        },
        rows=True,
    )
    written = {(row[0], row[1]) for row in rows}
    return [
        first[(o.job_id, o.attempt_token)] == i and (o.job_id, o.attempt_token) in written
        for i, o in enumerate(outcomes)
    ]


def rescue_expired(q: Statements, *, now: datetime) -> Steps[list[Job]]:
    """See :meth:`dispatch_core.store.Store.rescue_expired`.

    A read finds the expired leases (the usual answer, none, costs no write); one statement
    then rescues them and dead-letters the exhausted ones, with entry ids made here.
    """
    now = aware(now)
    rows = yield Stmt(q.rescue_candidates, {"now": now}, rows=True)
    if not rows:
        return []
    ids = [row[0] for row in rows]
    rows = yield Stmt(
        q.rescue, {"ids": ids, "dlq_ids": [new_id("dlq") for _ in ids], "now": now}, rows=True
    )
    rescued = [decode_job(row[:_NCOLS]) for row in rows]  # the last column is the notify
    rescued.sort(key=lambda job: job.id)
    return rescued


def next_run_at(
    q: Statements, *, queues: Collection[str] | None, names: Collection[str] | None
) -> Steps[datetime | None]:
    """See :meth:`dispatch_core.store.Store.next_run_at`."""
    if (queues is not None and not queues) or (names is not None and not names):
        return None
    params: dict[str, Any] = {}
    if queues is not None:
        params["queues"] = list(queues)
    if names is not None:
        params["names"] = list(names)
    rows = yield Stmt(q.next_run_at(queues is not None, names is not None), params, rows=True)
    return to_utc(rows[0][0]) if rows else None


# -- inspection and control --------------------------------------------------------------------


def get_job(q: Statements, job_id: str) -> Steps[Job]:
    """See :meth:`dispatch_core.store.Store.get_job`."""
    rows = yield Stmt(q.get_job, (job_id,), rows=True)
    if not rows:
        raise JobNotFoundError(job_id)
    return decode_job(rows[0])


def list_jobs(q: Statements, filter: JobFilter) -> Steps[list[Job]]:
    """See :meth:`dispatch_core.store.Store.list_jobs`."""
    columns: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("state", None if filter.state is None else filter.state.value),
        ("queue", filter.queue),
        ("name", filter.name),
        ("tenant", filter.tenant),
    ):
        if value is not None:
            columns.append(column)
            params.append(value)
    params += (filter.limit, filter.offset)
    rows = yield Stmt(q.list_jobs(tuple(columns)), params, rows=True)
    return [decode_job(row) for row in rows]


def count_jobs(q: Statements, *, queue: str | None = None) -> Steps[dict[JobState, int]]:
    """See :meth:`dispatch_core.store.Store.count_jobs`."""
    if queue is None:
        rows = yield Stmt(q.count_all, rows=True)
    else:
        rows = yield Stmt(q.count_queue, (queue,), rows=True)
    return {JobState(state): n for state, n in rows}


def _refused(q: Statements, job_id: str, target: JobState) -> Steps[None]:
    """Raise the error that explains why the conditional update of ``job_id`` to ``target``
    wrote nothing; return if the job may go there after all (it changed meanwhile)."""
    rows = yield Stmt(q.job_state, (job_id,), rows=True)
    if not rows:
        raise JobNotFoundError(job_id)
    state = JobState(rows[0][0])
    if target is JobState.PENDING and state is JobState.RUNNING:
        # RUNNING -> PENDING is the shutdown release, never a manual retry.
        raise InvalidTransitionError(job_id, "running", "pending", "the job is running")
    check_transition(job_id, state, target)


def cancel(q: Statements, job_id: str, *, now: datetime) -> Steps[Job]:
    """See :meth:`dispatch_core.store.Store.cancel`: one conditional update (a read only to
    explain a refusal)."""
    for _ in range(5):
        rows = yield Stmt(q.cancel, {"id": job_id, "now": aware(now)}, rows=True)
        if rows:
            return decode_job(rows[0])
        yield from _refused(q, job_id, JobState.CANCELLED)
    raise InvalidTransitionError(job_id, "?", "cancelled", "the job keeps changing state")


def retry(q: Statements, job_id: str, *, now: datetime) -> Steps[Job]:
    """See :meth:`dispatch_core.store.Store.retry`; wakes the listeners."""
    for _ in range(5):
        rows = yield Stmt(q.retry, {"id": job_id, "now": aware(now)}, rows=True)
        if rows:
            return decode_job(rows[0][:_NCOLS])  # the last column is the notify
        yield from _refused(q, job_id, JobState.PENDING)
    raise InvalidTransitionError(job_id, "?", "pending", "the job keeps changing state")


# -- the dead-letter queue ---------------------------------------------------------------------


def list_dlq(
    q: Statements, *, queue: str | None = None, limit: int = 100, offset: int = 0
) -> Steps[list[DLQEntry]]:
    """See :meth:`dispatch_core.store.Store.list_dlq`."""
    if queue is None:
        rows = yield Stmt(q.list_dlq_all, (limit, offset), rows=True)
    else:
        rows = yield Stmt(q.list_dlq_queue, (queue, limit, offset), rows=True)
    return [decode_dlq(row) for row in rows]


def get_dlq(q: Statements, entry_id: str) -> Steps[DLQEntry]:
    """See :meth:`dispatch_core.store.Store.get_dlq`."""
    rows = yield Stmt(q.get_dlq, (entry_id,), rows=True)
    if not rows:
        raise DLQEntryNotFoundError(entry_id)
    return decode_dlq(rows[0])


def replay_dlq(q: Statements, entry_id: str, *, new_job_id: str, now: datetime) -> Steps[Job]:
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


def purge_dlq(q: Statements, *, before: datetime) -> Steps[int]:
    """See :meth:`dispatch_core.store.Store.purge_dlq`."""
    count: int = yield Stmt(q.purge_dlq, (aware(before),))
    return count
