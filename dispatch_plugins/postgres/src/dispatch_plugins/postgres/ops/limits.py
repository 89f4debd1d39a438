"""The claim under the queues' limits: :func:`claim_limited`, part of the worker's hot path.

:func:`~dispatch_plugins.postgres.ops.claim.claim` leaves the limited queues (a concurrency cap
or a rate) alone and says when one of them has due jobs; then the store runs
:func:`claim_limited`, which takes the limited queues' row locks and counts what they use
before it claims.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from datetime import datetime, timedelta
from functools import cached_property, lru_cache
from typing import Any

import attrs

from dispatch_core.models import Job
from dispatch_core.queues import QueueConfig, TokenBucket
from dispatch_core.storekit import claim_order
from dispatch_plugins.postgres.codec import JOB_SELECT, aware, decode_job, to_utc
from dispatch_plugins.postgres.ops.claim import PlainClaimSQL
from dispatch_plugins.postgres.ops.common import (
    TRANSACTION,
    Steps,
    Stmt,
    Tables,
    claim_filters,
)
from dispatch_plugins.postgres.schema import LIMITED, RUNNABLE

__all__ = [
    "ClaimLockSQL",
    "ClaimScanSQL",
    "ClaimTakeSQL",
    "LimitedClaimSQL",
    "claim_limited",
]

#: Candidate scans of one limited claim, at most (each one claims at least one job when any
#: is claimable; the next claim goes on).
_SCAN_ROUNDS = 8


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


class ClaimLockSQL(PlainClaimSQL):
    """Steps 1 and 2 of :func:`claim_limited`: lock the limited queues, read their usage."""

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

    @cached_property
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


def _lock_limits(
    q: ClaimLockSQL,
    params: dict[str, Any],
    *,
    by_queue: bool,
    by_name: bool,
    now: datetime,
    others: bool,
) -> Steps[dict[str, _Allowance] | None]:
    """Steps 1 and 2 of :func:`claim_limited`: the allowances of the locked queues, by name;
    ``None`` when there is nothing to claim (no such queue, and not ``others``)."""
    rows = yield Stmt(q.claim_lock(by_queue, by_name), params, rows=True)
    if not rows and not others:
        return None
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
    return limits


class ClaimScanSQL(PlainClaimSQL):
    """Step 3 of :func:`claim_limited`: the candidates, in claim order."""

    @lru_cache(maxsize=16)  # noqa: B019
    def claim_scan(self, by_queue: bool, by_name: bool, others: bool) -> str:
        """Lock the next candidates in claim order: jobs of the locked limited queues that
        still have room (minus the tenants that have none and the jobs already seen), and
        with ``others`` those of the queues that are neither paused nor limited."""
        unlimited = f" OR queue <> ALL({self.held})" if others else ""
        return f"""
SELECT id, queue, coalesce('=' || tenant, '') FROM {self.jobs}
WHERE {RUNNABLE} AND run_at <= %(now)b{claim_filters(by_queue, by_name)}
  AND id <> ALL(%(seen)b::text[])
  AND (queue = ANY(%(open)b::text[]){unlimited})
  AND NOT EXISTS (SELECT 1 FROM unnest(%(xq)b::text[], %(xt)b::text[]) AS x(queue, tenant_key)
                  WHERE x.queue = {self.jobs}.queue
                    AND x.tenant_key = coalesce('=' || {self.jobs}.tenant, ''))
ORDER BY priority DESC, run_at, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""


def _choose(
    q: ClaimScanSQL,
    params: dict[str, Any],
    limits: dict[str, _Allowance],
    *,
    by_queue: bool,
    by_name: bool,
    others: bool,
    limit: int,
) -> Steps[list[str]]:
    """Step 3 of :func:`claim_limited`: the ids of the jobs to claim, in claim order."""
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
    return chosen


class ClaimTakeSQL(Tables):
    """Step 4 of :func:`claim_limited`: the claim of the chosen jobs."""

    @cached_property
    def claim_take(self) -> str:
        """Claim the chosen (already locked) jobs and write the buckets they drew from."""
        return f"""
WITH c AS (
    UPDATE {self.jobs} AS j
    SET state = 'running', attempt = j.attempt + 1, worker_id = %(worker_id)s,
        attempt_token = gen_random_uuid()::text, started_at = %(now)b,
        lease_expires_at = %(until)b, updated_at = %(now)b{self.claim_from}
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


def _take(
    q: ClaimTakeSQL,
    limits: dict[str, _Allowance],
    chosen: list[str],
    *,
    worker_id: str,
    lease_seconds: float,
    now: datetime,
) -> Steps[list[Job]]:
    """Step 4 of :func:`claim_limited`: claim ``chosen``, in claim order."""
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


class LimitedClaimSQL(ClaimLockSQL, ClaimScanSQL, ClaimTakeSQL):
    """The statements of :func:`claim_limited`."""


def claim_limited(
    q: LimitedClaimSQL,
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
    limits = yield from _lock_limits(
        q, params, by_queue=by_queue, by_name=by_name, now=now, others=others
    )
    if limits is None:
        return []
    chosen = yield from _choose(
        q, params, limits, by_queue=by_queue, by_name=by_name, others=others, limit=limit
    )
    if not chosen:
        return []
    return (
        yield from _take(
            q, limits, chosen, worker_id=worker_id, lease_seconds=lease_seconds, now=now
        )
    )
