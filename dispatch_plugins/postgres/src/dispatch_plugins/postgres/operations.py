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

import math
from collections.abc import Callable, Collection, Generator, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final, TypeVar, cast

import attrs

from dispatch_core._ids import new_id
from dispatch_core.cluster import WorkerInfo
from dispatch_core.cron import CronEntry
from dispatch_core.errors import (
    CronNotFoundError,
    DLQEntryNotFoundError,
    InvalidTransitionError,
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
from dispatch_core.states import TRANSITIONS, JobState, check_transition
from dispatch_core.store import PruneCutoffs
from dispatch_core.workflows.models import (
    TERMINAL_RUN_STATES,
    NewEvent,
    NewRun,
    RunFilter,
    RunState,
    StepRecord,
    WorkflowEvent,
    WorkflowRun,
)
from dispatch_plugins.postgres.codec import (
    COPY_COLUMNS,
    COPY_TYPES,
    CRON_COLUMNS,
    CRON_SELECT,
    DLQ_COLUMNS,
    DLQ_SELECT,
    EVENT_SELECT,
    INSERT_COLUMNS,
    JOB_COLUMNS,
    JOB_SELECT,
    RUN_COLUMNS,
    RUN_SELECT,
    STEP_COLUMNS,
    STEP_SELECT,
    WORKER_COLUMNS,
    aware,
    claim_order,
    clean_text,
    copy_row,
    cron_params,
    decode_cron,
    decode_dlq,
    decode_event,
    decode_job,
    decode_queue_config,
    decode_run,
    decode_step,
    decode_worker,
    encode_input,
    encode_result,
    job_from_new,
    new_job_columns,
    new_job_params,
    run_from_new,
    step_params,
    to_utc,
    worker_params,
)
from dispatch_plugins.postgres.schema import KEY_SCOPE, LIMITED, RUNNABLE

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
    "count_runnable",
    "throughput",
    "cancel",
    "retry",
    "list_dlq",
    "count_dlq",
    "get_dlq",
    "replay_dlq",
    "purge_dlq",
    "claim_limited",
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

T = TypeVar("T")


@attrs.frozen(slots=True)
class Stmt:
    """One statement. The runner sends back its rows (``rows=True``) or its row count.

    ``unbounded``: the statement may rightly run for long (a migration's index build, the
    wait for another process's migration): on the store's connections it runs without the
    call's deadline, and the server's ``statement_timeout`` is lifted for the rest of the
    transaction (which it must be in).
    """

    sql: str
    params: Sequence[Any] | Mapping[str, Any] | None = None
    rows: bool = False
    unbounded: bool = False


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
#: Float slack when counting whole tokens (as :meth:`TokenBucket.available` does).
_TOKEN_EPSILON = 1e-9
#: Candidate scans of one limited claim, at most (each one claims at least one job when any
#: is claimable; the next claim goes on).
_SCAN_ROUNDS = 8


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
        self.workers = workers = f"{s}.workers"
        self.leader = leader = f"{s}.leader"
        self.cron = cron = f"{s}.cron"
        self.queues = queues = f"{s}.queues"
        self.buckets = buckets = f"{s}.queue_buckets"
        #: The queues the plain claim leaves alone: paused ones, and limited ones (claimed by
        #: :func:`claim_limited` under their row's lock). An InitPlan, run once per statement.
        self.held = f"ARRAY(SELECT name FROM {queues} WHERE paused OR {LIMITED})"
        self.channel = channel = f"dispatch_{schema}"
        #: Queues a wake-up for every listener, delivered when the transaction commits.
        self.notify = notify = f"pg_notify('{channel}', '')"
        cols = ", ".join(INSERT_COLUMNS)

        # -- producing ------------------------------------------------------------------------
        values = "%s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb"
        self.insert_one = (
            f"WITH ins AS (INSERT INTO {jobs} ({cols}) VALUES ({values}))\nSELECT {notify}::text"
        )
        # A key taken in the job's tenant skips the row; the caller then reads the row that
        # holds the key. (A taken id still fails the statement: no row of it is written.) The
        # scalar subquery is evaluated once, and only if a row was inserted.
        on_conflict = (
            f"ON CONFLICT (unique_key, ({KEY_SCOPE})) WHERE unique_key IS NOT NULL DO NOTHING"
        )
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
        # By key alone (the index's first column): the caller drops other tenants' rows.
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
        # The worker's row rides along with its lease extensions: one statement, so one round
        # trip and one transaction.
        wcols = ", ".join(WORKER_COLUMNS)
        self.upsert_worker = (
            f"INSERT INTO {workers} ({wcols})\n"
            "VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)b::text[], %(concurrency)s,\n"
            "        %(version)s, %(started_at)b, %(last_seen)b, %(state)s, %(names)b::text[])\n"
            "ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in WORKER_COLUMNS[1:])
        )
        self.heartbeat_worker = f"WITH w AS (\n{self.upsert_worker}\n)\n{self.heartbeat}"
        self.worker_seen = f"WITH w AS (\n{self.upsert_worker}\n)\nSELECT 1{self._claim_from}"
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
        # With a worker timeout: first mark the silent workers dead (the CTE's own writes are
        # not visible to the rest of the statement, hence the IN over what it returns), then
        # find the expired leases and the jobs of dead and stopped workers. The running jobs
        # are few (the cluster's slots), and each looks its worker up by primary key.
        gone = (
            f"EXISTS (SELECT 1 FROM {workers} AS w\n"
            "            WHERE w.id = j.worker_id AND w.state IN ('dead', 'stopped'))"
        )
        self.rescue_candidates_by_worker = f"""
WITH d AS (
    UPDATE {workers} SET state = 'dead'
    WHERE state = 'running' AND last_seen < %(cutoff)b
    RETURNING id
)
SELECT j.id FROM {jobs} AS j
WHERE j.state = 'running'
  AND (j.lease_expires_at < %(now)b OR j.worker_id IN (SELECT id FROM d) OR {gone})
ORDER BY j.lease_expires_at LIMIT {_RESCUE_BATCH}
"""
        # Rows another transaction holds (a finishing worker, a concurrent rescuer) are
        # skipped rather than waited for: no deadlock, and the next round takes them if
        # they are still expired.
        self.rescue = self._rescue("j.lease_expires_at < %(now)b", relax)
        self.rescue_by_worker = self._rescue(f"(j.lease_expires_at < %(now)b OR {gone})", relax)

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

        # -- the dead-letter queue ------------------------------------------------------------
        self.get_dlq = f"SELECT {DLQ_SELECT} FROM {dlq} WHERE id = %s"
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

        # -- the cluster: workers and the leader ------------------------------------------------
        self.register_worker = self.upsert_worker
        self.deregister_worker = (
            f"WITH l AS (DELETE FROM {leader} WHERE holder = %(id)s)\n"
            f"UPDATE {workers} SET state = 'stopped', last_seen = %(now)b WHERE id = %(id)s"
        )
        self.list_workers = (
            f"SELECT {', '.join(f'w.{c}' for c in WORKER_COLUMNS)}, l.holder IS NOT NULL\n"
            f"FROM {workers} AS w LEFT JOIN {leader} AS l ON l.holder = w.id\n"
            "ORDER BY w.started_at, w.id"
        )
        # One statement: the row lock taken by ON CONFLICT makes the condition and the write
        # atomic, so of two workers racing for an expired lease exactly one gets a row back.
        self.acquire_leadership = (
            f"INSERT INTO {leader} AS l (name, holder, expires_at)\n"
            "VALUES ('leader', %(id)s, %(until)b)\n"
            "ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder,\n"
            "    expires_at = EXCLUDED.expires_at\n"
            "WHERE l.holder = EXCLUDED.holder OR l.expires_at <= %(now)b\n"
            "RETURNING holder"
        )
        self.release_leadership = f"DELETE FROM {leader} WHERE name = 'leader' AND holder = %s"
        self.get_leader = f"SELECT holder FROM {leader} WHERE name = 'leader' AND expires_at > %b"

        # -- cron -------------------------------------------------------------------------------
        ccols = ", ".join(CRON_COLUMNS)
        ctypes = (
            "text", "text", "text", "text", "text", "text", "text", "float8", "bool",
            "timestamptz", "timestamptz", "text", "timestamptz", "timestamptz",
        )  # fmt: skip
        arrays = ", ".join(f"%({c})b::{t}[]" for c, t in zip(CRON_COLUMNS, ctypes, strict=True))
        # A re-registered entry keeps its enabled flag, last run and, unless its schedule
        # changed, its next tick (SET sees the row as it was).
        self.upsert_cron = f"""
INSERT INTO {cron} AS c ({ccols})
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
        self.list_cron = f"SELECT {CRON_SELECT} FROM {cron} ORDER BY name"
        self.get_cron = f"SELECT {CRON_SELECT} FROM {cron} WHERE name = %s"
        self.set_cron_enabled = (
            f"UPDATE {cron} SET enabled = %(enabled)s, updated_at = %(now)b,\n"
            "    next_run_at = CASE WHEN %(enabled)s THEN %(next)b ELSE next_run_at END\n"
            f"WHERE name = %(name)s RETURNING {CRON_SELECT}"
        )
        # The compare-and-set: of any number of leaders firing the same tick, one row comes
        # back to one of them.
        self.fire_cron = (
            f"UPDATE {cron} SET next_run_at = %(next)b,\n"
            "    last_run_at = CASE WHEN %(fired)s THEN %(now)b ELSE last_run_at END,\n"
            "    last_job_id = CASE WHEN %(fired)s THEN %(job_id)s ELSE last_job_id END\n"
            "WHERE name = %(name)s AND enabled AND next_run_at = %(tick)b\n"
            "RETURNING name"
        )
        self.cron_last_job = f"UPDATE {cron} SET last_job_id = %s WHERE name = %s"
        self.delete_cron = f"DELETE FROM {cron} WHERE name = %s"

        # -- queues -----------------------------------------------------------------------------
        # New limits keep the pause flag and the bucket's level, capped at the new size (NULL
        # tokens: a full bucket). Lifting a limit makes jobs claimable: wake the workers.
        self.set_queue = f"""
WITH u AS (
    INSERT INTO {queues} AS q (name, configured, concurrency, rate, burst, per_tenant)
    VALUES (%(name)s, true, %(concurrency)s, %(rate)s, %(burst)s, %(per_tenant)s)
    ON CONFLICT (name) DO UPDATE SET
        configured = true, concurrency = EXCLUDED.concurrency, rate = EXCLUDED.rate,
        burst = EXCLUDED.burst, per_tenant = EXCLUDED.per_tenant,
        tokens = CASE WHEN q.tokens IS NULL THEN NULL ELSE least(q.tokens, %(size)s) END
)
SELECT {notify}::text
"""
        self.cap_buckets = (
            f"UPDATE {buckets} SET tokens = %(size)s WHERE queue = %(name)s AND tokens > %(size)s"
        )
        self.pause_queue = f"""
WITH u AS (
    INSERT INTO {queues} AS q (name, paused) VALUES (%(name)s, %(paused)s)
    ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused
)
SELECT {notify}::text
"""
        # Every queue that has a row or jobs. Counting every job's queue is a scan of the
        # table, like count_jobs(): an operator's view, not a hot path.
        self.list_queues = f"""
WITH c AS (
    SELECT queue,
           count(*) FILTER (WHERE {RUNNABLE}) AS depth,
           count(*) FILTER (WHERE state = 'running') AS running,
           count(*) FILTER (WHERE state = 'completed' AND finished_at > %(since)b
                                  AND finished_at <= %(now)b) AS done
    FROM {jobs} GROUP BY queue
)
SELECT coalesce(q.name, c.queue), q.configured, q.concurrency, q.rate, q.burst, q.per_tenant,
       coalesce(q.paused, false), coalesce(c.depth, 0), coalesce(c.running, 0),
       coalesce(c.done, 0)
FROM {queues} AS q FULL JOIN c ON c.queue = q.name
"""

        # -- retention --------------------------------------------------------------------------
        # Batched: the sub-select picks at most %(limit)s rows by index, the outer condition
        # re-checks each row as it is now (a job retried meanwhile is no longer finished).
        self.prune_jobs = {
            state: (
                f"DELETE FROM {jobs}\n"
                f"WHERE id = ANY(ARRAY(SELECT id FROM {jobs}\n"
                f"                     WHERE state = '{state}' AND finished_at < %(before)b\n"
                "                     LIMIT %(limit)s))\n"
                f"  AND state = '{state}' AND finished_at < %(before)b"
            )
            for state in ("completed", "failed", "cancelled")
        }
        self.prune_dlq = (
            f"DELETE FROM {dlq}\n"
            f"WHERE id = ANY(ARRAY(SELECT id FROM {dlq} WHERE failed_at < %(before)b\n"
            "                     ORDER BY failed_at LIMIT %(limit)s))"
        )
        self.prune_workers = (
            f"DELETE FROM {workers}\n"
            f"WHERE id = ANY(ARRAY(SELECT id FROM {workers}\n"
            "                     WHERE state IN ('stopped', 'dead') AND last_seen < %(before)b\n"
            "                     LIMIT %(limit)s))\n"
            "  AND state IN ('stopped', 'dead') AND last_seen < %(before)b"
        )

        # -- durable workflows ------------------------------------------------------------------
        self.runs = runs = f"{s}.workflow_runs"
        self.steps = steps = f"{s}.workflow_steps"
        self.events = events = f"{s}.workflow_events"
        self.insert_run = (
            f"INSERT INTO {runs} (id, name, version, input, state, created_at, updated_at,\n"
            "    tenant, parent_run_id, correlation_key)\n"
            "VALUES (%(id)s, %(name)s, %(version)s, %(input)s::jsonb, 'running', %(now)b,\n"
            "        %(now)b, %(tenant)s, %(parent_run_id)s, %(correlation_key)s)\n"
            # A taken id writes nothing (and waits for a concurrent insert of it to end).
            "ON CONFLICT (id) DO NOTHING\n"
            "RETURNING id"
        )
        self.get_run = f"SELECT {RUN_SELECT} FROM {runs} WHERE id = %s"
        self.run_exists = f"SELECT 1 FROM {runs} WHERE id = %s"
        terminal = ", ".join(f"'{state.value}'" for state in sorted(TERMINAL_RUN_STATES))
        # One conditional update: the row lock it takes orders it with every other writer.
        self.set_run_version = (
            f"UPDATE {runs} SET version = %(version)s, updated_at = %(now)b\n"
            "WHERE id = %(id)s AND generation = %(generation)s\n"
            f"  AND state NOT IN ({terminal})\n"
            f"RETURNING {RUN_SELECT}"
        )
        self.list_steps = f"SELECT {STEP_SELECT} FROM {steps} WHERE run_id = %s ORDER BY seq"
        self.get_step = f"SELECT {STEP_SELECT} FROM {steps} WHERE run_id = %s AND seq = %s"
        # Inserted only for an existing run; a pending record is replaced, a finished one is
        # left alone (then nothing comes back and the caller reads the stored one).
        self.save_step = (
            f"INSERT INTO {steps} AS t (run_id, {', '.join(STEP_COLUMNS)})\n"
            "SELECT %(run_id)s::text, %(seq)s::int4, %(name)s::text, %(kind)s::text,\n"
            "       %(state)s::text, %(started_at)b::timestamptz, %(finished_at)b::timestamptz,\n"
            "       %(output)s::jsonb, %(error)s::text, %(attempts)s::int4,\n"
            "       %(wake_at)b::timestamptz\n"
            f"WHERE EXISTS (SELECT 1 FROM {runs} WHERE id = %(run_id)s)\n"
            "ON CONFLICT (run_id, seq) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in STEP_COLUMNS[1:])
            + "\nWHERE t.state = 'pending'\n"
            f"RETURNING {', '.join(f't.{c}' for c in STEP_COLUMNS)}"
        )
        # The run's row lock serialises every decision about the run (park, wake, take): each
        # later statement of the transaction sees what the previous holders committed.
        self.lock_run = (
            f"SELECT state, generation, tenant, waiting_for FROM {runs} WHERE id = %s FOR UPDATE"
        )
        self.lock_run_for_take = f"SELECT 1 FROM {runs} WHERE id = %s FOR NO KEY UPDATE"
        unconsumed = (
            f"SELECT 1 FROM {events} AS e WHERE e.run_id = %(id)s AND e.name = %(waiting_for)s\n"
            "      AND e.consumed_seq IS NULL"
        )
        update_run = (
            f"UPDATE {runs} SET state = %(state)s, output = %(output)s::jsonb,\n"
            "    error = %(error)s, wake_at = %(wake_at)b, waiting_for = %(waiting_for)s,\n"
            "    updated_at = %(now)b, finished_at = %(finished_at)b,\n"
            "    generation = generation + %(bump)s\n"
            "WHERE id = %(id)s"
        )
        self.update_run = f"{update_run}\nRETURNING {RUN_SELECT}"
        # Parking as waiting: refused when an awaited event has already arrived.
        self.park_waiting = (
            f"{update_run} AND NOT EXISTS (\n    {unconsumed}\n)\nRETURNING {RUN_SELECT}"
        )
        self.insert_event = (
            f"INSERT INTO {events} (id, run_id, name, payload, created_at, tenant)\n"
            "VALUES (%s, %s, %s, %s::jsonb, %b, %s)"
        )
        # The wake-up: the run runs again, and its pending wake-up job (the wait's timeout
        # timer) is made due; the caller inserts the driver when none came back.
        self.wake_run = (
            f"WITH r AS (\n"
            f"    UPDATE {runs} SET state = 'running', waiting_for = NULL, wake_at = NULL,\n"
            "        updated_at = %(now)b\n"
            "    WHERE id = %(id)s\n"
            "), u AS (\n"
            f"    UPDATE {jobs} SET run_at = %(now)b, updated_at = %(now)b\n"
            "    WHERE unique_key = %(key)s AND state = 'pending'\n"
            f"      AND {KEY_SCOPE} = coalesce('=' || %(tenant)s::text, '')\n"
            "    RETURNING id\n"
            ")\n"
            f"SELECT id, (SELECT {notify}::text) FROM u"
        )
        # The event a seq has already consumed (a replay: there is one at most, as takers of a
        # run take turns), else the oldest unconsumed one, taken by a row-locking update that
        # skips rows another taker holds.
        self.take_event = f"""
WITH prev AS (
    SELECT {EVENT_SELECT} FROM {events}
    WHERE run_id = %(id)s AND consumed_seq = %(seq)s AND name = %(name)s
    LIMIT 1
), took AS (
    UPDATE {events} SET consumed_seq = %(seq)s, consumed_at = %(now)b
    WHERE id = (
        SELECT id FROM {events}
        WHERE run_id = %(id)s AND name = %(name)s AND consumed_seq IS NULL
          AND NOT EXISTS (SELECT 1 FROM prev)
        ORDER BY created_at, id LIMIT 1
        FOR UPDATE SKIP LOCKED)
    RETURNING {EVENT_SELECT}
)
SELECT * FROM prev UNION ALL SELECT * FROM took
"""

    def _rescue(self, expired: str, relax: str) -> str:
        """The rescue statement, for the candidates that ``expired`` (SQL on ``j``) still
        holds for once they are locked."""
        exhausted = "j.attempt >= j.max_attempts"
        return f"""
WITH c AS (
    SELECT j.id, x.dlq_id
    FROM {self.jobs} AS j
    JOIN unnest(%(ids)b::text[], %(dlq_ids)b::text[]) AS x(id, dlq_id) ON j.id = x.id
    WHERE j.state = 'running' AND {expired}
    FOR UPDATE OF j SKIP LOCKED
), r AS (
    UPDATE {self.jobs} AS j SET
        state = CASE WHEN {exhausted} THEN 'failed' ELSE 'retrying' END,
        run_at = CASE WHEN {exhausted} THEN j.run_at ELSE %(now)b END,
        finished_at = CASE WHEN {exhausted} THEN %(now)b ELSE j.finished_at END,
        last_error = CASE (SELECT w.state FROM {self.workers} AS w WHERE w.id = j.worker_id)
            WHEN 'dead' THEN 'worker ' || j.worker_id
                             || ' died: it sent no heartbeat within the worker timeout'
            WHEN 'stopped' THEN 'worker ' || j.worker_id
                                || ' stopped or restarted without finishing the job'
            ELSE 'worker ' || coalesce(j.worker_id, '?')
                 || ' died or stalled: its lease expired without a heartbeat' END,
        updated_at = %(now)b, {_LEASE_FREE}
    FROM c{relax}
    WHERE j.id = c.id
    RETURNING c.dlq_id, {", ".join(f"j.{c}" for c in JOB_SELECT.split(", "))}
), dead AS (
    INSERT INTO {self.dlq} (id, job_id, name, queue, payload, error, attempts, max_attempts,
                            priority, timeout, tenant, headers, failed_at)
    SELECT dlq_id, id, name, queue, payload, last_error, attempt, max_attempts, priority,
           timeout, tenant, headers, %(now)b
    FROM r WHERE state = 'failed'
)
SELECT {JOB_SELECT}, (SELECT {self.notify}::text) FROM r
"""

    @lru_cache(maxsize=8)  # noqa: B019 -- one Statements per schema, kept for the process
    def claim(self, by_queue: bool, by_name: bool) -> str:
        """The claim statement, with or without the queue and name filters.

        It leaves paused and limited queues alone, and also says (``waiting``, on one extra
        row when nothing was claimed) whether a limited queue the caller serves has due jobs
        and, as far as an unlocked look can tell, room to start one: then
        :func:`claim_limited` should run. With no queue rows both checks read an empty table.
        """
        filters = _filters(by_queue, by_name)
        # One statement. The sub-select locks the first runnable rows in claim order, skipping
        # rows another claimer holds (SKIP LOCKED re-checks each locked row against the WHERE),
        # and ARRAY(...) makes it run once, before the UPDATE looks the ids up by primary key.
        return f"""
WITH c AS (
    UPDATE {self.jobs} AS j
    SET state = 'running', attempt = j.attempt + 1, worker_id = %(worker_id)s,
        attempt_token = gen_random_uuid()::text, started_at = %(now)b,
        lease_expires_at = %(until)b, updated_at = %(now)b{self._claim_from}
    WHERE j.id = ANY(ARRAY(
        SELECT id FROM {self.jobs}
        WHERE {RUNNABLE} AND run_at <= %(now)b{filters} AND queue <> ALL({self.held})
        ORDER BY priority DESC, run_at, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED))
    RETURNING {JOB_SELECT}
)
SELECT c.*, w.waiting FROM ({self._waiting(by_queue, by_name)}) AS w(waiting) LEFT JOIN c ON true
"""

    def _waiting(self, by_queue: bool, by_name: bool) -> str:
        """Whether a limited, unpaused queue (among the caller's) has a due job and room.

        The room is judged without the lock (running jobs against the cap, the bucket's
        refilled level), and only for whole-queue limits; a wrong guess costs one empty
        :func:`claim_limited`, or delays a claim until the next one, never more.
        """
        where_queue = " AND q.name = ANY(%(queues)b::text[])" if by_queue else ""
        return f"""SELECT EXISTS (
    SELECT 1 FROM {self.queues} AS q
    CROSS JOIN LATERAL ({self._due_job(by_name)}) AS due
    WHERE NOT q.paused AND {LIMITED}{where_queue}
      AND (q.per_tenant OR q.concurrency IS NULL
           OR q.concurrency > (SELECT count(*) FROM {self.jobs} AS r
                               WHERE r.state = 'running' AND r.queue = q.name))
      AND (q.per_tenant OR q.rate IS NULL OR q.tokens IS NULL
           OR q.tokens + greatest(extract(epoch FROM %(now)b - q.tokens_at), 0) * q.rate
              >= {1 - _TOKEN_EPSILON})
)"""

    def _due_job(self, by_name: bool) -> str:
        """A due job of queue ``q.name``, for a ``LATERAL`` join on the queues table.

        ``LATERAL ... LIMIT 1`` keeps the (small) queues table outside: an ``EXISTS`` may be
        planned as a semi-join that reads every runnable job to find their queues. The range
        condition on ``x.queue`` (an equality in effect) and the ``ORDER BY`` that starts with
        it keep the probe on jobs_queue_idx: an equality would make the first sort key
        redundant, and the planner, led by statistics that say most jobs share one queue,
        could walk jobs_claim_idx through the whole backlog of the other queues instead.
        """
        where_name = " AND x.name = ANY(%(names)b::text[])" if by_name else ""
        return (
            f"SELECT 1 FROM {self.jobs} AS x\n"
            f"    WHERE x.queue >= q.name AND x.queue <= q.name AND x.{RUNNABLE}\n"
            f"      AND x.run_at <= %(now)b{where_name}\n"
            "    ORDER BY x.queue, x.priority DESC, x.run_at, x.id LIMIT 1"
        )

    @lru_cache(maxsize=8)  # noqa: B019
    def claim_lock(self, by_queue: bool, by_name: bool) -> str:
        """Lock the rows of the limited, unpaused queues (among the caller's) that have due
        jobs, in name order (so that claimers never deadlock), and read their limits and
        bucket."""
        where_queue = " AND q.name = ANY(%(queues)b::text[])" if by_queue else ""
        return f"""
SELECT q.name, q.concurrency, q.rate, q.burst, q.per_tenant, q.tokens, q.tokens_at
FROM {self.queues} AS q
CROSS JOIN LATERAL ({self._due_job(by_name)}) AS due
WHERE NOT q.paused AND {LIMITED}{where_queue}
ORDER BY q.name
FOR UPDATE OF q
"""

    @property
    def claim_usage(self) -> str:
        """What the locked queues use: running jobs per queue and tenant key, and the
        per-tenant buckets that are not full (a full bucket is the same as none)."""
        return f"""
SELECT 'r', queue, coalesce('=' || tenant, ''), count(*)::float8, NULL::timestamptz
FROM {self.jobs} WHERE state = 'running' AND queue = ANY(%(locked)b::text[])
GROUP BY queue, coalesce('=' || tenant, '')
UNION ALL
SELECT 'b', b.queue, b.tenant_key, b.tokens, b.updated_at
FROM {self.buckets} AS b
JOIN unnest(%(bq)b::text[], %(brate)b::float8[], %(bsize)b::float8[]) AS u(queue, rate, size)
    ON b.queue = u.queue
WHERE b.tokens + greatest(extract(epoch FROM %(now)b - b.updated_at), 0) * u.rate < u.size
"""

    @lru_cache(maxsize=16)  # noqa: B019
    def claim_scan(self, by_queue: bool, by_name: bool, others: bool) -> str:
        """Lock the next candidates in claim order: jobs of the locked limited queues that
        still have room (minus the tenants that have none and the jobs already seen), and
        with ``others`` those of the queues that are neither paused nor limited."""
        unlimited = f" OR queue <> ALL({self.held})" if others else ""
        return f"""
SELECT id, queue, coalesce('=' || tenant, '') FROM {self.jobs}
WHERE {RUNNABLE} AND run_at <= %(now)b{_filters(by_queue, by_name)}
  AND id <> ALL(%(seen)b::text[])
  AND (queue = ANY(%(open)b::text[]){unlimited})
  AND NOT EXISTS (SELECT 1 FROM unnest(%(xq)b::text[], %(xt)b::text[]) AS x(queue, tenant_key)
                  WHERE x.queue = {self.jobs}.queue
                    AND x.tenant_key = coalesce('=' || {self.jobs}.tenant, ''))
ORDER BY priority DESC, run_at, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

    @property
    def claim_take(self) -> str:
        """Claim the chosen (already locked) jobs and write the buckets they drew from."""
        return f"""
WITH c AS (
    UPDATE {self.jobs} AS j
    SET state = 'running', attempt = j.attempt + 1, worker_id = %(worker_id)s,
        attempt_token = gen_random_uuid()::text, started_at = %(now)b,
        lease_expires_at = %(until)b, updated_at = %(now)b{self._claim_from}
    WHERE j.id = ANY(%(ids)b::text[]) AND j.{RUNNABLE}
    RETURNING {JOB_SELECT}
), qb AS (
    UPDATE {self.queues} AS q SET tokens = u.tokens, tokens_at = u.at
    FROM unnest(%(qn)b::text[], %(qt)b::float8[], %(qa)b::timestamptz[]) AS u(name, tokens, at)
    WHERE q.name = u.name
), tb AS (
    INSERT INTO {self.buckets} (queue, tenant_key, tokens, updated_at)
    SELECT * FROM unnest(%(tq)b::text[], %(tk)b::text[], %(tt)b::float8[],
                         %(ta)b::timestamptz[])
    ON CONFLICT (queue, tenant_key) DO UPDATE SET
        tokens = EXCLUDED.tokens, updated_at = EXCLUDED.updated_at
)
SELECT * FROM c
"""

    @lru_cache(maxsize=8)  # noqa: B019
    def next_run_at(self, by_queue: bool, by_name: bool) -> str:
        """The earliest run_at among runnable jobs of unpaused queues, with or without the
        filters.

        ``ORDER BY ... LIMIT 1`` rather than ``min()``: it walks jobs_due_idx in order and stops
        at the first match, which the planner does not always see for ``min()`` with filters.
        """
        return (
            f"SELECT run_at FROM {self.jobs}\n"
            f"WHERE {RUNNABLE}{_filters(by_queue, by_name)}\n"
            f"  AND queue <> ALL(ARRAY(SELECT name FROM {self.queues} WHERE paused))\n"
            "ORDER BY run_at LIMIT 1"
        )

    def list_jobs(self, columns: tuple[str, ...], after: bool, order: SortOrder) -> str:
        """Jobs filtered by equality on ``columns``, by id in ``order``, paged; past a
        cursor (one more parameter, before the limit) when ``after``."""
        return self._page(f"SELECT {JOB_SELECT} FROM {self.jobs}", columns, after, order)

    def list_runs(self, columns: tuple[str, ...], after: bool, order: SortOrder) -> str:
        """Workflow runs as :meth:`list_jobs` pages jobs."""
        return self._page(f"SELECT {RUN_SELECT} FROM {self.runs}", columns, after, order)

    def list_dlq(
        self, columns: tuple[str, ...], after: bool, order: SortOrder, replayed: bool | None
    ) -> str:
        """Dead-letter entries as :meth:`list_jobs` pages jobs, replayed or not when asked."""
        select = f"SELECT {DLQ_SELECT} FROM {self.dlq}"
        return self._page(select, columns, after, order, _replayed(replayed))

    @lru_cache(maxsize=64)  # noqa: B019
    def previewed(
        self,
        page: str,
        columns: tuple[str, ...],
        bodies: tuple[str, ...],
        preview: int,
        order: SortOrder,
    ) -> str:
        """A listing ``page`` (a statement selecting ``columns``) with previews: each body
        whose text (the server's rendering of the jsonb) is longer than ``preview`` bytes
        comes back NULL, and after the columns come, for each body, its first ``preview``
        characters when it is longer (``left`` counts characters: the decoder cuts them to
        bytes) and its length in bytes.

        The page is chosen first, in a subquery (its LIMIT keeps the planner from merging
        it), so only the listed rows are rendered, each body once (the ``OFFSET 0`` fence
        keeps the lateral subquery from being inlined into each use); a long body never
        leaves the server."""
        n = int(preview)  # a number in the SQL text: one prepared statement per length
        outer = [
            f"CASE WHEN octet_length(t.{c}) > {n} THEN NULL ELSE p.{c} END"
            if c in bodies
            else f"p.{c}"
            for c in columns
        ]
        for c in bodies:
            outer += (
                f"CASE WHEN octet_length(t.{c}) > {n} THEN left(t.{c}, {n}) END",
                f"octet_length(t.{c})",
            )
        texts = ", ".join(f"p.{c}::text AS {c}" for c in bodies)
        return (
            f"SELECT {', '.join(outer)}\nFROM ({page}) AS p\n"
            f"CROSS JOIN LATERAL (SELECT {texts} OFFSET 0) AS t\n"
            f"ORDER BY p.id {'DESC' if order is SortOrder.DESC else 'ASC'}"
        )

    @lru_cache(maxsize=256)  # noqa: B019
    def _page(
        self,
        select: str,
        columns: tuple[str, ...],
        after: bool,
        order: SortOrder,
        fixed: tuple[str, ...] = (),
    ) -> str:
        """``select`` filtered by equality on ``columns`` (and the parameterless conditions
        ``fixed``), by id in ``order``, from the cursor on. The cursor is a range on the id
        (``id < %s ORDER BY id DESC LIMIT n``), so the primary key, or an index of (filter
        column, id), is read in order from the cursor and the scan stops with the page: a page
        past a cursor costs the same however deep it is (an offset still walks the rows it
        skips)."""
        desc = order is SortOrder.DESC
        conditions = [f"{c} = %s" for c in columns] + list(fixed)
        if after:
            conditions.append("id < %s" if desc else "id > %s")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return f"{select}{where}\nORDER BY id {'DESC' if desc else 'ASC'} LIMIT %s OFFSET %s"

    @lru_cache(maxsize=8)  # noqa: B019
    def count_jobs(self, by_queue: bool, by_tenant: bool) -> str:
        """Job counts by state, of one queue and one tenant when asked (a scan: an operator's
        view, not a hot path)."""
        where = _equal(("queue", by_queue), ("tenant", by_tenant))
        return f"SELECT state, count(*) FROM {self.jobs}{where} GROUP BY state"

    @lru_cache(maxsize=2)  # noqa: B019
    def count_runnable(self, by_tenant: bool) -> str:
        """Runnable jobs by queue and name, of one tenant when asked, but for the names in
        ``%(excluded)b``. A plain read: no row lock, so it never holds up a claim.

        The conditions on state and run_at are jobs_due_idx's predicate and key, so the
        (generic) plan reads the due rows only, through that index, however many finished
        rows the table keeps; a HashAggregate groups them, with no sort (the caller orders
        the groups). No index of its own: it would cost every enqueue for a read made about
        once a minute. A million due jobs take about 0.3 s.
        """
        tenant = " AND tenant = %(tenant)s" if by_tenant else ""
        return (
            f"SELECT queue, name, count(*) FROM {self.jobs}\n"
            f"WHERE {RUNNABLE} AND run_at <= %(now)b{tenant}\n"
            "  AND name <> ALL(%(excluded)b::text[])\n"
            "GROUP BY queue, name"
        )

    @lru_cache(maxsize=32)  # noqa: B019
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

    @lru_cache(maxsize=8)  # noqa: B019
    def throughput(self, by_queue: bool, by_tenant: bool) -> str:
        """Completed and failed jobs per bucket of ``%(size)s`` seconds since the epoch, from
        ``%(since)b`` on. ``state IN ('completed', 'failed')`` implies jobs_finished_idx's
        predicate, so the range on finished_at is one index range per state rather than a
        scan of the table."""
        filters = "".join(
            f" AND {c} = %({c})s" for c, on in (("queue", by_queue), ("tenant", by_tenant)) if on
        )
        return (
            "SELECT floor(extract(epoch FROM finished_at) / %(size)s)::bigint AS slot,\n"
            "       count(*) FILTER (WHERE state = 'completed'),\n"
            "       count(*) FILTER (WHERE state = 'failed')\n"
            f"FROM {self.jobs}\n"
            f"WHERE state IN ('completed', 'failed') AND finished_at >= %(since)b{filters}\n"
            "GROUP BY slot ORDER BY slot"
        )

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


def _replayed(replayed: bool | None) -> tuple[str, ...]:
    """The condition of a ``replayed`` filter (``IS NULL`` is dlq_unreplayed_idx's WHERE)."""
    if replayed is None:
        return ()
    return ("replayed_at IS NOT NULL",) if replayed else ("replayed_at IS NULL",)


def _equal(*columns: tuple[str, bool]) -> str:
    """`` WHERE c = %s AND ...`` for the columns that are on (empty when none is)."""
    on = [f"{c} = %s" for c, wanted in columns if wanted]
    return f" WHERE {' AND '.join(on)}" if on else ""


def _filters(by_queue: bool, by_name: bool) -> str:
    sql = " AND queue = ANY(%(queues)b::text[])" if by_queue else ""
    return sql + (" AND name = ANY(%(names)b::text[])" if by_name else "")


@lru_cache(maxsize=16)
def statements(schema: str, relaxed_worker_commits: bool = True) -> Statements:
    """The (cached) :class:`Statements` of ``schema``."""
    return Statements(schema, relaxed_worker_commits)


# -- producing -------------------------------------------------------------------------------


def enqueue(q: Statements, jobs: Sequence[NewJob]) -> Steps[list[Job]]:
    """Insert ``jobs`` and wake the listeners when the transaction commits; a ``unique_key``
    taken in the job's tenant yields the job that holds it. A taken id fails the statement
    (``jobs_pkey``; the store raises :class:`~dispatch_core.errors.JobIdTakenError`).

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
        taken: dict[tuple[str | None, str], None] = {}
        for i in todo:
            new = jobs[i]
            if new.id in inserted:
                out[i] = job_from_new(new)
            else:
                assert new.unique_key is not None  # a job without a key is always inserted
                taken[new.tenant, new.unique_key] = None
        if not taken:
            break
        names = list({key: None for _, key in taken})
        rows = yield Stmt(q.jobs_by_unique_key, (names,), rows=True)
        # Each key's holder in its tenant; other tenants holding the same key do not count.
        holders = {
            (job.tenant, job.unique_key): job
            for job in map(decode_job, rows)
            if (job.tenant, job.unique_key) in taken
        }
        todo = [
            i
            for i in todo
            if out[i] is None and (jobs[i].tenant, jobs[i].unique_key) not in holders
        ]
        for i, new in enumerate(jobs):
            if out[i] is None and (new.tenant, new.unique_key) in holders:
                out[i] = holders[new.tenant, new.unique_key]
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
) -> Steps[tuple[list[Job], bool]]:
    """See :meth:`dispatch_core.store.Store.claim`: the one-statement claim, which leaves
    paused and limited queues alone.

    Returns:
        The claimed jobs, in claim order, and whether a limited queue the caller serves has
        due jobs it might start (:func:`claim_limited` claims those).
    """
    if limit <= 0 or (queues is not None and not queues) or (names is not None and not names):
        return [], False
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
    # With nothing claimed, the one row holds NULL job columns and the flag.
    jobs = [decode_job(row[:_NCOLS]) for row in rows if row[0] is not None]
    jobs.sort(key=claim_order)  # RETURNING order is not the claim order
    return jobs, bool(rows and rows[0][_NCOLS])


@attrs.define
class _Allowance:
    """How many more jobs a locked limited queue may start now, per tenant key (one key,
    ``''``, for a queue without ``per_tenant``)."""

    config: QueueConfig
    now: datetime
    #: Running jobs per key, as counted under the queue's lock.
    running: dict[str, int] = attrs.Factory(dict)
    #: Buckets per key; a key without one has a full bucket.
    buckets: dict[str, TokenBucket] = attrs.Factory(dict)
    #: Jobs claimed per key by this claim.
    taken: dict[str, int] = attrs.Factory(dict)

    def key(self, tenant: str) -> str:
        """The allowance a job with this tenant key draws from."""
        return tenant if self.config.per_tenant else ""

    def bucket(self, key: str) -> TokenBucket:
        """The key's bucket, refilled to now."""
        bucket = self.buckets.get(key) or TokenBucket.full(self.config, self.now)
        return bucket.refill(self.config, self.now)

    def left(self, key: str) -> int:
        """Jobs the key may still start."""
        left = math.inf
        taken = self.taken.get(key, 0)
        if self.config.concurrency is not None:
            left = self.config.concurrency - self.running.get(key, 0) - taken
        if self.config.rate is not None:
            left = min(left, self.bucket(key).available() - taken)
        return max(int(min(left, 1 << 30)), 0)


def claim_limited(
    q: Statements,
    *,
    worker_id: str,
    queues: Collection[str] | None,
    names: Collection[str] | None,
    limit: int,
    lease_seconds: float,
    now: datetime,
    others: bool = True,
) -> Steps[list[Job]]:
    """Claim under the queues' limits, in one transaction; see
    :meth:`dispatch_core.store.Store.claim`. Without ``others``, only jobs of limited queues
    are claimed (the caller has just claimed the others).

    1. Lock the rows of the limited queues that have due jobs (``FOR UPDATE``, in name
       order): claimers of the same limited queue take turns from here on, cluster-wide.
    2. Count their running jobs per tenant and read their non-full buckets: under the lock,
       in a statement that starts after it was granted, so every claim committed before is
       counted.
    3. Lock candidates in claim order (``FOR UPDATE SKIP LOCKED``), the jobs of unlimited
       queues included, so that priorities hold across queues; keep those whose queue (or
       tenant) has room, and scan again past the queues and tenants that ran out.
    4. Claim the kept jobs and write the buckets they drew from, in one statement.
    """
    if limit <= 0 or (queues is not None and not queues) or (names is not None and not names):
        return []
    now = aware(now)
    by_queue, by_name = queues is not None, names is not None
    params: dict[str, Any] = {"now": now}
    if by_queue:
        params["queues"] = list(queues or ())
    if by_name:
        params["names"] = list(names or ())
    yield TRANSACTION
    rows = yield Stmt(q.claim_lock(by_queue, by_name), params, rows=True)
    if not rows and not others:
        return []
    limits: dict[str, _Allowance] = {}
    for name, concurrency, rate, burst, per_tenant, tokens, tokens_at in rows:
        config = QueueConfig(
            name=name, concurrency=concurrency, rate=rate, burst=burst, per_tenant=per_tenant
        )
        allowance = _Allowance(config, now)
        # The queue-wide bucket; a per-tenant queue keeps its buckets in their own table.
        if not per_tenant and rate is not None and tokens is not None and tokens_at is not None:
            allowance.buckets[""] = TokenBucket(tokens=tokens, updated_at=to_utc(tokens_at))
        limits[name] = allowance
    if limits:
        tenant_rate = [a.config for a in limits.values() if a.config.per_tenant and a.config.rate]
        usage = yield Stmt(
            q.claim_usage,
            {
                "locked": list(limits),
                "bq": [c.name for c in tenant_rate],
                "brate": [c.rate for c in tenant_rate],
                "bsize": [float(c.bucket_size) for c in tenant_rate],
                "now": now,
            },
            rows=True,
        )
        for kind, queue, key, value, at in usage:
            allowance = limits[queue]
            if kind == "r":
                k = allowance.key(key)
                allowance.running[k] = allowance.running.get(k, 0) + int(value)
            else:
                allowance.buckets[key] = TokenBucket(tokens=value, updated_at=to_utc(at))
    # The queues and tenants without room, found so far.
    closed: set[str] = set()
    excluded: set[tuple[str, str]] = set()
    for name, allowance in limits.items():
        keys = set(allowance.running) | set(allowance.buckets) | {""}
        for key in keys:
            if allowance.left(key) <= 0:
                if allowance.config.per_tenant:
                    excluded.add((name, key))
                else:
                    closed.add(name)
    chosen: list[str] = []
    seen: list[str] = []
    for _ in range(_SCAN_ROUNDS):
        want = limit - len(chosen)
        open_ = [name for name in limits if name not in closed]
        if not open_ and not others:
            break
        scan = dict(params)
        scan.update(
            seen=seen,
            open=open_,
            xq=[queue for queue, _ in excluded],
            xt=[key for _, key in excluded],
            limit=want,
        )
        rows = yield Stmt(q.claim_scan(by_queue, by_name, others), scan, rows=True)
        for job_id, queue, tenant in rows:
            seen.append(job_id)
            room = limits.get(queue)
            if room is None:  # an unlimited queue
                chosen.append(job_id)
            else:
                key = room.key(tenant)
                if room.left(key) > 0:
                    room.taken[key] = room.taken.get(key, 0) + 1
                    chosen.append(job_id)
                if room.left(key) <= 0:
                    if room.config.per_tenant:
                        excluded.add((queue, key))
                    else:
                        closed.add(queue)
            if len(chosen) >= limit:
                break
        if len(chosen) >= limit or len(rows) < want:
            break
    if not chosen:
        return []
    # The buckets the claimed jobs drew from, refilled to now, minus what they took.
    qn: list[str] = []
    qt: list[float] = []
    qa: list[datetime] = []
    tq: list[str] = []
    tk: list[str] = []
    tt: list[float] = []
    ta: list[datetime] = []
    for name, allowance in limits.items():
        if allowance.config.rate is None:
            continue
        for key, n in allowance.taken.items():
            bucket = allowance.bucket(key).take(n)
            if allowance.config.per_tenant:
                tq.append(name)
                tk.append(key)
                tt.append(bucket.tokens)
                ta.append(bucket.updated_at)
            else:
                qn.append(name)
                qt.append(bucket.tokens)
                qa.append(bucket.updated_at)
    rows = yield Stmt(
        q.claim_take,
        {
            "worker_id": worker_id,
            "now": now,
            "until": now + timedelta(seconds=lease_seconds),
            "ids": chosen,
            "qn": qn,
            "qt": qt,
            "qa": qa,
            "tq": tq,
            "tk": tk,
            "tt": tt,
            "ta": ta,
        },
        rows=True,
    )
    jobs = [decode_job(row) for row in rows]
    jobs.sort(key=claim_order)
    return jobs


def heartbeat(
    q: Statements,
    *,
    leases: Mapping[str, str],
    lease_seconds: float,
    now: datetime,
    worker: WorkerInfo | None = None,
) -> Steps[set[str]]:
    """See :meth:`dispatch_core.store.Store.heartbeat`: one statement, the worker's row
    included."""
    now = aware(now)
    wparams: dict[str, Any] = {}
    if worker is not None:
        wparams = worker_params(worker)
        wparams.update(last_seen=now, state="running")
    if not leases:
        if worker is not None:
            yield Stmt(q.worker_seen, wparams, rows=True)
        return set()
    items = sorted(leases.items())  # one lock order for every writer: fewer deadlocks
    params: dict[str, Any] = {
        "ids": [job_id for job_id, _ in items],
        "tokens": [token for _, token in items],
        "until": now + timedelta(seconds=lease_seconds),
        "now": now,
    }
    params.update(wparams)
    rows = yield Stmt(q.heartbeat if worker is None else q.heartbeat_worker, params, rows=True)
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


def rescue_expired(
    q: Statements, *, now: datetime, worker_timeout: float | None = None
) -> Steps[list[Job]]:
    """See :meth:`dispatch_core.store.Store.rescue_expired`.

    A read finds the expired leases (the usual answer, none, costs no write); one statement
    then rescues them and dead-letters the exhausted ones, with entry ids made here. With
    ``worker_timeout``, the read first marks the silent workers dead, and the jobs of dead
    and stopped workers are rescued too.
    """
    now = aware(now)
    if worker_timeout is None:
        rows = yield Stmt(q.rescue_candidates, {"now": now}, rows=True)
    else:
        cutoff = now - timedelta(seconds=worker_timeout)
        rows = yield Stmt(q.rescue_candidates_by_worker, {"now": now, "cutoff": cutoff}, rows=True)
    if not rows:
        return []
    ids = [row[0] for row in rows]
    rows = yield Stmt(
        q.rescue if worker_timeout is None else q.rescue_by_worker,
        {"ids": ids, "dlq_ids": [new_id("dlq") for _ in ids], "now": now},
        rows=True,
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
    columns, params = _given(
        ("state", None if filter.state is None else filter.state.value),
        ("queue", filter.queue),
        ("name", filter.name),
        ("tenant", filter.tenant),
    )
    sql = q.list_jobs(columns, filter.after is not None, filter.order)
    params = _page_params(params, filter.after, filter.limit, filter.offset)
    if filter.preview is not None:
        sql = q.previewed(sql, JOB_COLUMNS, _JOB_BODIES, filter.preview, filter.order)
        rows = yield Stmt(sql, params, rows=True)
        return _decode_previewed(rows, JOB_COLUMNS, _JOB_BODIES, filter.preview, decode_job)
    rows = yield Stmt(sql, params, rows=True)
    return [decode_job(row) for row in rows]


_JOB_BODIES = ("payload", "result")
_DLQ_BODIES = ("payload",)
_RUN_BODIES = ("input", "output")
_Listed = TypeVar("_Listed", Job, DLQEntry, WorkflowRun)


def _decode_previewed(
    rows: Sequence[Sequence[Any]],
    columns: tuple[str, ...],
    bodies: tuple[str, ...],
    preview: int,
    decode: Callable[[Sequence[Any]], _Listed],
) -> list[_Listed]:
    """Decode the rows of a :meth:`Statements.previewed` statement: each body its statement
    left out becomes a :class:`Truncated`."""
    out: list[_Listed] = []
    width = len(columns)
    for row in rows:
        cut: dict[str, Any] = {}
        for i, body in enumerate(bodies):
            head, size = row[width + 2 * i], row[width + 2 * i + 1]
            if size is not None and size > preview:
                cut[body] = Truncated(preview=Truncated.cut(head, preview), size=size)
        item = decode(row[:width])
        out.append(attrs.evolve(item, **cut) if cut else item)
    return out


def _given(*pairs: tuple[str, object]) -> tuple[tuple[str, ...], list[Any]]:
    """The columns whose value is given, and those values."""
    columns = tuple(c for c, v in pairs if v is not None)
    return columns, [v for _, v in pairs if v is not None]


def _page_params(params: list[Any], after: str | None, limit: int, offset: int) -> list[Any]:
    """The parameters of a :meth:`Statements._page` statement."""
    return [*params, *(() if after is None else (after,)), limit, offset]


def count_jobs(
    q: Statements, *, queue: str | None = None, tenant: str | None = None
) -> Steps[dict[JobState, int]]:
    """See :meth:`dispatch_core.store.Store.count_jobs`."""
    columns, params = _given(("queue", queue), ("tenant", tenant))
    rows = yield Stmt(q.count_jobs("queue" in columns, "tenant" in columns), params, rows=True)
    return {JobState(state): n for state, n in rows}


def count_runnable(
    q: Statements,
    *,
    now: datetime,
    tenant: str | None = None,
    exclude_names: Collection[str] = (),
) -> Steps[list[RunnableCount]]:
    """See :meth:`dispatch_core.store.Store.count_runnable`: one read, grouped by the server
    and ordered here by code point (the order Python sorts strings in, whatever the
    database's collation)."""
    params = {"now": aware(now), "tenant": tenant, "excluded": sorted(exclude_names)}
    rows = yield Stmt(q.count_runnable(tenant is not None), params, rows=True)
    return [RunnableCount(queue=queue, name=name, count=n) for queue, name, n in sorted(rows)]


def throughput(
    q: Statements,
    *,
    since: datetime,
    bucket_seconds: int,
    queue: str | None = None,
    tenant: str | None = None,
) -> Steps[list[ThroughputBucket]]:
    """See :meth:`dispatch_core.store.Store.throughput`: one ``GROUP BY`` over the finished
    jobs' index."""
    params = {"size": bucket_seconds, "since": aware(since), "queue": queue, "tenant": tenant}
    rows = yield Stmt(q.throughput(queue is not None, tenant is not None), params, rows=True)
    return [
        ThroughputBucket(
            start=datetime.fromtimestamp(slot * bucket_seconds, UTC), completed=done, failed=failed
        )
        for slot, done, failed in rows
    ]


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


def list_dlq(q: Statements, filter: DLQFilter) -> Steps[list[DLQEntry]]:
    """See :meth:`dispatch_core.store.Store.list_dlq`. Entry ids are TypeIDs made when the
    job failed (in :func:`finish` and :func:`rescue_expired`), so id order is failure order;
    the pages walk the primary key."""
    columns, params = _given(
        ("queue", filter.queue), ("name", filter.name), ("tenant", filter.tenant)
    )
    sql = q.list_dlq(columns, filter.after is not None, filter.order, filter.replayed)
    params = _page_params(params, filter.after, filter.limit, filter.offset)
    if filter.preview is not None:
        sql = q.previewed(sql, DLQ_COLUMNS, _DLQ_BODIES, filter.preview, filter.order)
        rows = yield Stmt(sql, params, rows=True)
        return _decode_previewed(rows, DLQ_COLUMNS, _DLQ_BODIES, filter.preview, decode_dlq)
    rows = yield Stmt(sql, params, rows=True)
    return [decode_dlq(row) for row in rows]


def count_dlq(
    q: Statements,
    *,
    queue: str | None = None,
    tenant: str | None = None,
    replayed: bool | None = None,
    before: datetime | None = None,
) -> Steps[int]:
    """See :meth:`dispatch_core.store.Store.count_dlq`."""
    columns, params = _given(("queue", queue), ("tenant", tenant))
    if before is not None:
        params.append(aware(before))
    sql = q.count_dlq("queue" in columns, "tenant" in columns, replayed, before is not None)
    rows = yield Stmt(sql, params, rows=True)
    return cast(int, rows[0][0])


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


def purge_dlq(
    q: Statements,
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


# -- the cluster: workers and the leader ---------------------------------------------------------


def register_worker(q: Statements, worker: WorkerInfo) -> Steps[None]:
    """See :meth:`dispatch_core.store.Store.register_worker`."""
    yield Stmt(q.register_worker, worker_params(worker))


def deregister_worker(q: Statements, worker_id: str, *, now: datetime) -> Steps[None]:
    """See :meth:`dispatch_core.store.Store.deregister_worker`: one statement, the leader
    lease given up with it."""
    yield Stmt(q.deregister_worker, {"id": worker_id, "now": aware(now)})


def list_workers(q: Statements) -> Steps[list[WorkerInfo]]:
    """See :meth:`dispatch_core.store.Store.list_workers`."""
    rows = yield Stmt(q.list_workers, rows=True)
    n = len(WORKER_COLUMNS)
    return [decode_worker(row[:n], leader=bool(row[n])) for row in rows]


def acquire_leadership(q: Statements, *, worker_id: str, ttl: float, now: datetime) -> Steps[bool]:
    """See :meth:`dispatch_core.store.Store.acquire_leadership`: one upsert."""
    now = aware(now)
    rows = yield Stmt(
        q.acquire_leadership,
        {"id": worker_id, "until": now + timedelta(seconds=ttl), "now": now},
        rows=True,
    )
    return bool(rows)


def release_leadership(q: Statements, worker_id: str) -> Steps[None]:
    """See :meth:`dispatch_core.store.Store.release_leadership`."""
    yield Stmt(q.release_leadership, (worker_id,))


def get_leader(q: Statements, *, now: datetime) -> Steps[str | None]:
    """See :meth:`dispatch_core.store.Store.get_leader`."""
    rows = yield Stmt(q.get_leader, (aware(now),), rows=True)
    return rows[0][0] if rows else None


# -- cron ---------------------------------------------------------------------------------------


def upsert_cron(q: Statements, entries: Sequence[CronEntry], *, now: datetime) -> Steps[None]:
    """See :meth:`dispatch_core.store.Store.upsert_cron`: one statement for the batch (the
    last of several entries with one name wins)."""
    by_name = {entry.name: entry for entry in entries}
    if not by_name:
        return
    columns = list(zip(*(cron_params(entry) for entry in by_name.values()), strict=True))
    params: dict[str, Any] = {c: list(v) for c, v in zip(CRON_COLUMNS, columns, strict=True)}
    params["now"] = aware(now)
    yield Stmt(q.upsert_cron, params)


def list_cron(q: Statements) -> Steps[list[CronEntry]]:
    """See :meth:`dispatch_core.store.Store.list_cron`."""
    rows = yield Stmt(q.list_cron, rows=True)
    entries = [decode_cron(row) for row in rows]
    entries.sort(key=lambda entry: entry.name)  # Python's order, whatever the collation
    return entries


def get_cron(q: Statements, name: str) -> Steps[CronEntry]:
    """See :meth:`dispatch_core.store.Store.get_cron`."""
    rows = yield Stmt(q.get_cron, (name,), rows=True)
    if not rows:
        raise CronNotFoundError(name)
    return decode_cron(rows[0])


def set_cron_enabled(
    q: Statements, name: str, *, enabled: bool, next_run_at: datetime, now: datetime
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


def fire_cron(
    q: Statements,
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


def delete_cron(q: Statements, name: str) -> Steps[bool]:
    """See :meth:`dispatch_core.store.Store.delete_cron`."""
    count: int = yield Stmt(q.delete_cron, (name,))
    return count > 0


# -- queues -------------------------------------------------------------------------------------


def set_queue(q: Statements, config: QueueConfig) -> Steps[None]:
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


def pause_queue(q: Statements, name: str, *, paused: bool) -> Steps[None]:
    """See :meth:`dispatch_core.store.Store.pause_queue`; a resume wakes the workers."""
    yield Stmt(q.pause_queue, {"name": name, "paused": paused}, rows=True)


def list_queues(q: Statements, *, now: datetime) -> Steps[list[QueueStats]]:
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


def prune(q: Statements, cutoffs: PruneCutoffs, *, limit: int = 10_000) -> Steps[int]:
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


# -- durable workflows --------------------------------------------------------------------------

#: Parking states: entering one increments the run's generation.
_PARKED = frozenset({RunState.SLEEPING, RunState.WAITING})
#: What ``update_run(expect=None)`` accepts.
_NON_TERMINAL = frozenset(RunState) - TERMINAL_RUN_STATES


def create_run(q: Statements, run: NewRun, driver: NewJob) -> Steps[WorkflowRun]:
    """See :meth:`dispatch_core.store.Store.create_run`: the run and its first driver job in
    one transaction; ``INSERT ... ON CONFLICT (id) DO NOTHING RETURNING``, and the driver only
    when the run was inserted, else the stored run."""
    params = {
        "id": run.id,
        "name": run.name,
        "version": run.version,
        "input": encode_input(run.input, run.name),
        "now": aware(run.created_at),
        "tenant": run.tenant,
        "parent_run_id": run.parent_run_id,
        "correlation_key": run.correlation_key,
    }
    yield TRANSACTION
    while True:
        inserted = yield Stmt(q.insert_run, params, rows=True)
        if inserted:
            yield from enqueue(q, [driver])
            return run_from_new(run)
        # The id is taken: the stored run, read by a new statement (which sees a concurrent
        # insert of it that the conflict waited for). Gone again (pruned): insert once more.
        rows = yield Stmt(q.get_run, (run.id,), rows=True)
        if rows:
            return decode_run(rows[0])


def get_run(q: Statements, run_id: str) -> Steps[WorkflowRun]:
    """See :meth:`dispatch_core.store.Store.get_run`."""
    rows = yield Stmt(q.get_run, (run_id,), rows=True)
    if not rows:
        raise RunNotFoundError(run_id)
    return decode_run(rows[0])


def list_runs(q: Statements, filter: RunFilter) -> Steps[list[WorkflowRun]]:
    """See :meth:`dispatch_core.store.Store.list_runs`."""
    columns, params = _given(
        ("state", None if filter.state is None else filter.state.value),
        ("name", filter.name),
        ("tenant", filter.tenant),
        ("parent_run_id", filter.parent_run_id),
        ("correlation_key", filter.correlation_key),
    )
    sql = q.list_runs(columns, filter.after is not None, filter.order)
    params = _page_params(params, filter.after, filter.limit, filter.offset)
    if filter.preview is not None:
        sql = q.previewed(sql, RUN_COLUMNS, _RUN_BODIES, filter.preview, filter.order)
        rows = yield Stmt(sql, params, rows=True)
        return _decode_previewed(rows, RUN_COLUMNS, _RUN_BODIES, filter.preview, decode_run)
    rows = yield Stmt(sql, params, rows=True)
    return [decode_run(row) for row in rows]


def list_steps(q: Statements, run_id: str) -> Steps[list[StepRecord]]:
    """See :meth:`dispatch_core.store.Store.list_steps`."""
    rows = yield Stmt(q.list_steps, (run_id,), rows=True)
    return [decode_step(row) for row in rows]


def save_step(q: Statements, run_id: str, step: StepRecord, *, now: datetime) -> Steps[StepRecord]:
    """See :meth:`dispatch_core.store.Store.save_step`: one upsert that never touches a
    finished record; when it writes nothing, a read returns the stored record (a new
    statement, so it sees one that a concurrent driver has just committed)."""
    rows = yield Stmt(q.save_step, step_params(run_id, step), rows=True)
    if rows:
        return decode_step(rows[0])
    rows = yield Stmt(q.get_step, (run_id, step.seq), rows=True)
    if not rows:  # no such run (a record is never deleted while its run exists)
        raise RunNotFoundError(run_id)
    return decode_step(rows[0])


def update_run(
    q: Statements,
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
) -> Steps[WorkflowRun | None]:
    """See :meth:`dispatch_core.store.Store.update_run`.

    One transaction: ``SELECT ... FOR UPDATE`` of the run's row, the conditions checked on
    the row as it is then, the update (for a wait, only if no awaited event is there: a new
    statement, which sees every event whose sender held the lock before), the driver job.
    """
    now = aware(now)
    yield TRANSACTION
    rows = yield Stmt(q.lock_run, (run_id,), rows=True)
    if not rows:
        raise RunNotFoundError(run_id)
    current, current_generation = RunState(rows[0][0]), rows[0][1]
    if current not in (expect if expect is not None else _NON_TERMINAL):
        return None
    if generation is not None and generation != current_generation:
        return None
    params = {
        "id": run_id,
        "state": state.value,
        "output": encode_result(cast(JSON, output)),
        "error": clean_text(error),
        "wake_at": None if wake_at is None else aware(wake_at),
        "waiting_for": waiting_for,
        "now": now,
        "finished_at": now if state in TERMINAL_RUN_STATES else None,
        "bump": 1 if state in _PARKED else 0,
    }
    waits = state is RunState.WAITING and waiting_for is not None
    rows = yield Stmt(q.park_waiting if waits else q.update_run, params, rows=True)
    if not rows:  # the awaited event has arrived: the caller takes it instead
        return None
    if driver is not None:
        yield from enqueue(q, [driver])
    return decode_run(rows[0])


def set_run_version(
    q: Statements, run_id: str, version: int, *, generation: int, now: datetime
) -> Steps[WorkflowRun | None]:
    """See :meth:`dispatch_core.store.Store.set_run_version`: one conditional ``UPDATE ...
    RETURNING``; when it writes nothing, a read tells an unknown run from a failed
    condition."""
    params = {"id": run_id, "version": version, "generation": generation, "now": aware(now)}
    rows = yield Stmt(q.set_run_version, params, rows=True)
    if rows:
        return decode_run(rows[0])
    exists = yield Stmt(q.run_exists, (run_id,), rows=True)
    if not exists:
        raise RunNotFoundError(run_id)
    return None


def send_event(q: Statements, event: NewEvent, *, driver: NewJob, now: datetime) -> Steps[bool]:
    """See :meth:`dispatch_core.store.Store.send_event`.

    One transaction: ``SELECT ... FOR UPDATE`` of the run's row (so a park and a send take
    turns), the event, then for a run waiting for it the wake-up: the run's state and its
    pending wake-up job in one statement, or the driver when there is no such job.
    """
    now = aware(now)
    yield TRANSACTION
    rows = yield Stmt(q.lock_run, (event.run_id,), rows=True)
    if not rows or rows[0][2] != event.tenant:
        raise RunNotFoundError(event.run_id)
    state, generation, _, waiting_for = rows[0]
    yield Stmt(
        q.insert_event,
        (
            event.id,
            event.run_id,
            event.name,
            encode_input(event.payload, event.name),
            aware(event.created_at),
            event.tenant,
        ),
    )
    if state != RunState.WAITING.value or waiting_for != event.name:
        return False
    key = f"wf:{event.run_id}:{generation}"
    # The park's key in the run's tenant (the event's, checked above), where its drivers hold it.
    params = {"id": event.run_id, "now": now, "key": key, "tenant": event.tenant}
    rows = yield Stmt(q.wake_run, params, rows=True)
    if not rows:  # no pending timer: the driver, under the park's key
        yield from enqueue(q, [attrs.evolve(driver, unique_key=key)])
    return True


def take_event(
    q: Statements, run_id: str, name: str, *, seq: int, now: datetime
) -> Steps[WorkflowEvent | None]:
    """See :meth:`dispatch_core.store.Store.take_event`.

    Under the run's row lock (``FOR NO KEY UPDATE``: takers of one run take turns, so two
    replays of one wait agree on its event, while history writes go on), one statement returns
    the event ``seq`` has consumed, or consumes the oldest unconsumed one with an ``UPDATE ...
    WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``.
    """
    yield TRANSACTION
    locked = yield Stmt(q.lock_run_for_take, (run_id,), rows=True)
    if not locked:
        return None
    rows = yield Stmt(
        q.take_event, {"id": run_id, "name": name, "seq": seq, "now": aware(now)}, rows=True
    )
    return decode_event(rows[0]) if rows else None
