"""The worker's hot path: claim, heartbeat, finish, rescue_expired and next_run_at.

The claim under the queues' limits, which :func:`claim` hands over to when a limited queue
has due jobs, is in :mod:`~dispatch_plugins.postgres.ops.limits`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from functools import cached_property, lru_cache
from typing import Any

from dispatch_core.cluster import WorkerInfo
from dispatch_core.models import Job, Outcome, OutcomeKind
from dispatch_core.storekit import STORE_SECTIONS, claim_order, new_id
from dispatch_plugins.postgres.codec import (
    JOB_SELECT,
    aware,
    clean_text,
    decode_job,
    encode_result,
    to_utc,
    worker_params,
)
from dispatch_plugins.postgres.ops.common import (
    LEASE_FREE,
    NCOLS,
    Steps,
    Stmt,
    Tables,
    WorkerRowSQL,
    claim_filters,
)
from dispatch_plugins.postgres.schema import LIMITED, RUNNABLE

__all__ = [
    "PlainClaimSQL",
    "HeartbeatSQL",
    "FinishSQL",
    "RescueSQL",
    "NextRunSQL",
    "ClaimSQL",
    *STORE_SECTIONS["claim"],
]

#: At most this many expired leases are rescued per call; the next call takes the rest.
_RESCUE_BATCH = 5000
#: Float slack when counting whole tokens (as :meth:`TokenBucket.available` does).
_TOKEN_EPSILON = 1e-9


# -- the plain claim ----------------------------------------------------------------------------


class PlainClaimSQL(Tables):
    """The one-statement claim, and the probe of the limited queues it shares with
    :class:`~.limits.ClaimLockSQL`."""

    @cached_property
    def held(self) -> str:
        """The queues the plain claim leaves alone: paused ones, and limited ones (claimed by
        :func:`~.limits.claim_limited` under their row's lock). An InitPlan, run once per
        statement."""
        return f"ARRAY(SELECT name FROM {self.queues} WHERE paused OR {LIMITED})"

    @lru_cache(maxsize=8)  # noqa: B019 -- one Statements per schema, kept for the process
    def claim(self, by_queue: bool, by_name: bool) -> str:
        """The claim statement, with or without the queue and name filters.

        It leaves paused and limited queues alone, and also says (``waiting``, on one extra
        row when nothing was claimed) whether a limited queue the caller serves has due jobs
        and, as far as an unlocked look can tell, room to start one: then
        :func:`~.limits.claim_limited` should run. With no queue rows both checks read an
        empty table.
        """
        filters = claim_filters(by_queue, by_name)
        # One statement. The sub-select locks the first runnable rows in claim order, skipping
        # rows another claimer holds (SKIP LOCKED re-checks each locked row against the WHERE),
        # and ARRAY(...) makes it run once, before the UPDATE looks the ids up by primary key.
        return f"""
WITH c AS (
    UPDATE {self.jobs} AS j
    SET state = 'running', attempt = j.attempt + 1, worker_id = %(worker_id)s,
        attempt_token = gen_random_uuid()::text, started_at = %(now)b,
        lease_expires_at = %(until)b, updated_at = %(now)b{self.claim_from}
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
        :func:`~.limits.claim_limited`, or delays a claim until the next one, never more.
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


def claim(
    q: PlainClaimSQL,
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
        due jobs it might start (:func:`~.limits.claim_limited` claims those).
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
    jobs = [decode_job(row[:NCOLS]) for row in rows if row[0] is not None]
    jobs.sort(key=claim_order)  # RETURNING order is not the claim order
    return jobs, bool(rows and rows[0][NCOLS])


# -- heartbeat ----------------------------------------------------------------------------------


class HeartbeatSQL(WorkerRowSQL):
    """The statements of :func:`heartbeat`."""

    @cached_property
    def heartbeat(self) -> str:
        return (
            f"UPDATE {self.jobs} AS j SET lease_expires_at = %(until)b, updated_at = %(now)b\n"
            f"FROM unnest(%(ids)b::text[], %(tokens)b::text[]) AS l(id, token){self.relax}\n"
            "WHERE j.id = l.id AND j.attempt_token = l.token AND j.state = 'running'\n"
            "RETURNING j.id"
        )

    # The worker's row rides along with its lease extensions: one statement, so one round trip
    # and one transaction.
    @cached_property
    def heartbeat_worker(self) -> str:
        return f"WITH w AS (\n{self.upsert_worker}\n)\n{self.heartbeat}"

    @cached_property
    def worker_seen(self) -> str:
        return f"WITH w AS (\n{self.upsert_worker}\n)\nSELECT 1{self.claim_from}"


def heartbeat(
    q: HeartbeatSQL,
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


# -- finish -------------------------------------------------------------------------------------


class FinishSQL(Tables):
    """The statements of :func:`finish`."""

    @cached_property
    def _finish(self) -> str:
        # Every outcome kind in one statement: the UPDATE writes the fenced rows, the INSERT
        # dead-letters the failed ones from what the UPDATE returned (the row as it is now:
        # failed, attempts counted), in the same statement, hence the same transaction.
        return f"""
WITH o AS (
    SELECT * FROM unnest(%(ids)b::text[], %(tokens)b::text[], %(kinds)b::text[],
                         %(errors)b::text[], %(results)b::text[], %(run_ats)b::timestamptz[],
                         %(dlq_ids)b::text[])
        AS o(id, token, kind, error, result, run_at, dlq_id)
), done AS (
    UPDATE {self.jobs} AS j SET
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
        updated_at = %(now)b, {LEASE_FREE}
    FROM o{self.relax}
    WHERE j.id = o.id AND j.attempt_token = o.token AND j.state = 'running'
    RETURNING j.id, o.token, o.kind, o.dlq_id, o.error, j.name, j.queue, j.payload, j.attempt,
              j.max_attempts, j.priority, j.timeout, j.tenant, j.headers
), dead AS (
    INSERT INTO {self.dlq} (id, job_id, name, queue, payload, error, attempts, max_attempts,
                       priority, timeout, tenant, headers, failed_at)
    SELECT dlq_id, id, name, queue, payload, coalesce(error, ''), attempt, max_attempts,
           priority, timeout, tenant, headers, %(now)b
    FROM done WHERE kind = 'fail'
)
"""

    @cached_property
    def finish(self) -> str:
        return self._finish + "SELECT id, token FROM done"

    @cached_property
    def finish_notify(self) -> str:
        """RETRY and RELEASE make jobs runnable: wake the other workers too."""
        return self._finish + f"SELECT id, token, (SELECT {self.notify}::text) FROM done"


def finish(q: FinishSQL, outcomes: Sequence[Outcome], *, now: datetime) -> Steps[list[bool]]:
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


# -- rescue -------------------------------------------------------------------------------------


class RescueSQL(Tables):
    """The statements of :func:`rescue_expired`."""

    def _rescue(self, expired: str) -> str:
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
        updated_at = %(now)b, {LEASE_FREE}
    FROM c{self.relax}
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

    # Rows another transaction holds (a finishing worker, a concurrent rescuer) are skipped
    # rather than waited for: no deadlock, and the next round takes them if they are still
    # expired.
    @cached_property
    def rescue(self) -> str:
        return self._rescue("j.lease_expires_at < %(now)b")

    @cached_property
    def rescue_by_worker(self) -> str:
        return self._rescue(f"(j.lease_expires_at < %(now)b OR {self._gone})")

    @cached_property
    def _gone(self) -> str:
        return (
            f"EXISTS (SELECT 1 FROM {self.workers} AS w\n"
            "            WHERE w.id = j.worker_id AND w.state IN ('dead', 'stopped'))"
        )

    @cached_property
    def rescue_candidates(self) -> str:
        return (
            f"SELECT id FROM {self.jobs} WHERE state = 'running' AND lease_expires_at < %(now)b\n"
            f"ORDER BY lease_expires_at LIMIT {_RESCUE_BATCH}"
        )

    # With a worker timeout: first mark the silent workers dead (the CTE's own writes are not
    # visible to the rest of the statement, hence the IN over what it returns), then find the
    # expired leases and the jobs of dead and stopped workers. The running jobs are few (the
    # cluster's slots), and each looks its worker up by primary key.
    @cached_property
    def rescue_candidates_by_worker(self) -> str:
        return f"""
WITH d AS (
    UPDATE {self.workers} SET state = 'dead'
    WHERE state = 'running' AND last_seen < %(cutoff)b
    RETURNING id
)
SELECT j.id FROM {self.jobs} AS j
WHERE j.state = 'running'
  AND (j.lease_expires_at < %(now)b OR j.worker_id IN (SELECT id FROM d) OR {self._gone})
ORDER BY j.lease_expires_at LIMIT {_RESCUE_BATCH}
"""


def rescue_expired(
    q: RescueSQL, *, now: datetime, worker_timeout: float | None = None
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
    rescued = [decode_job(row[:NCOLS]) for row in rows]  # the last column is the notify
    rescued.sort(key=lambda job: job.id)
    return rescued


# -- the next due job ---------------------------------------------------------------------------


class NextRunSQL(Tables):
    """The statement of :func:`next_run_at`."""

    @lru_cache(maxsize=8)  # noqa: B019
    def next_run_at(self, by_queue: bool, by_name: bool) -> str:
        """The earliest run_at among runnable jobs of unpaused queues, with or without the
        filters.

        ``ORDER BY ... LIMIT 1`` rather than ``min()``: it walks jobs_due_idx in order and stops
        at the first match, which the planner does not always see for ``min()`` with filters.
        """
        return (
            f"SELECT run_at FROM {self.jobs}\n"
            f"WHERE {RUNNABLE}{claim_filters(by_queue, by_name)}\n"
            f"  AND queue <> ALL(ARRAY(SELECT name FROM {self.queues} WHERE paused))\n"
            "ORDER BY run_at LIMIT 1"
        )


def next_run_at(
    q: NextRunSQL, *, queues: Collection[str] | None, names: Collection[str] | None
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


class ClaimSQL(PlainClaimSQL, HeartbeatSQL, FinishSQL, RescueSQL, NextRunSQL):
    """Every statement of this module."""
