"""Producing, inspection and control: enqueue, get_job, list_jobs, count_jobs, count_runnable,
throughput, cancel and retry. Each operation runs the script of its name in ``lua/``."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from dispatch_core.errors import InvalidTransitionError, JobNotFoundError
from dispatch_core.models import (
    Job,
    JobFilter,
    NewJob,
    RunnableCount,
    ThroughputBucket,
    utcnow,
)
from dispatch_core.states import JobState, check_transition
from dispatch_core.storekit import STORE_SECTIONS
from dispatch_plugins.redis import codec as c
from dispatch_plugins.redis.ops import common
from dispatch_plugins.redis.ops.common import Runner, page, previewed, walk
from dispatch_plugins.redis.sync import enqueue_result

__all__ = [*STORE_SECTIONS["jobs"]]


# -- producing: lua/enqueue.lua --------------------------------------------------------------


async def enqueue(s: Runner, jobs: Sequence[NewJob]) -> list[Job]:
    """Write ``jobs`` in one script; see :meth:`Store.enqueue`."""
    if not jobs:
        return []
    res = await s._call("enqueue", c.us(utcnow()), str(len(jobs)), *c.job_args(jobs))
    return enqueue_result(jobs, res)


# -- inspection: plain reads, lua/page.lua, lua/count_jobs.lua ------------------------------


async def get_job(s: Runner, job_id: str) -> Job:
    """The job ``job_id`` (one ``HGETALL``), or :class:`JobNotFoundError`."""
    # job:<id> holds job hashes only (every index lives elsewhere), so no id reaches
    # another kind of key
    key = s._key("job", job_id)
    flat = await s._cmd(lambda cl: cl.hgetall(key))
    if not flat:
        raise JobNotFoundError(job_id)
    return c.job_from(flat)


async def list_jobs(s: Runner, filter: JobFilter) -> list[Job]:
    """Walk the smallest index that matches (state, queue, name or tenant) by id, from the
    cursor, checking the other filters by index membership."""
    keys = []
    if filter.state is not None:
        keys.append(f"jobs:s:{filter.state.value}")
    if filter.queue is not None:
        keys.append(f"jobs:q:{filter.queue}")
    if filter.name is not None:
        keys.append(f"jobs:n:{filter.name}")
    if filter.tenant is not None:
        keys.append(f"jobs:t:{filter.tenant}")
    res = await page(
        s,
        base="jobs",
        keys=keys,
        exclude=[],
        order=filter.order,
        after=filter.after,
        offset=filter.offset,
        limit=filter.limit,
        hash_prefix="job:",
        preview=filter.preview,
        bodies=("payload", "result"),
    )
    return [previewed(flat, c.job_from) for flat in res]


async def count_jobs(
    s: Runner, *, queue: str | None = None, tenant: str | None = None
) -> dict[JobState, int]:
    """Counts by state. Unfiltered: the sizes of the state indexes. For a queue or a
    tenant: finished jobs from its finished indexes; pending, running and retrying by
    intersecting their index with its own as far as that costs at most
    :data:`~common.COUNT_BUDGET` (the costliest of the three is what the others leave of the
    total); what costs more is walked in bounded steps."""
    total, rows = await s._call("count_jobs", c.opt(queue), c.opt(tenant), str(common.COUNT_BUDGET))
    counts: dict[JobState, int] = {}
    derived: JobState | None = None
    for state, n, *keys in rows:
        if int(n) == -2:
            derived = JobState(state)
        elif int(n) == -1:
            counts[JobState(state)] = (await walk(s, keys[0], ins=keys[1:]))[0]
        else:
            counts[JobState(state)] = int(n)
    if derived is not None:
        # from one snapshot unless a state was walked; then jobs that moved meanwhile may
        # make it a little off: never below zero
        counts[derived] = max(0, int(total) - sum(counts.values()))
    return {state: n for state, n in counts.items() if n}


# -- runnable counts: lua/count_runnable_plan.lua, lua/count_runnable.lua --------------------


async def count_runnable(
    s: Runner,
    *,
    now: datetime,
    tenant: str | None = None,
    exclude_names: Collection[str] = (),
) -> list[RunnableCount]:
    """Runnable jobs by queue and name, counted in short steps that never hold up a claim,
    and at most :data:`~common.COUNT_RUNNABLE_LIMIT` jobs a queue.

    It walks the claim's own indexes of each queue that has runnable jobs: its ready jobs
    (``ready:<queue>``) in claim order, then its delayed ones (``delayed:<queue>``) that
    are due by ``now``, reading only each job's name (and tenant, when asked for one).
    With ``tenant``, when that tenant's index (``jobs:t:<tenant>``, finished jobs
    included) is smaller than the due jobs, it walks that instead, reading each job's
    state, queue, name and ``run_at``.

    Bounds: each step is one read-only script over at most
    :data:`~common.COUNT_RUNNABLE_CHUNK` entries (about a millisecond of the server's time),
    so other clients' commands run between two steps; and each queue (or the tenant's index)
    is looked at for at most :data:`~common.COUNT_RUNNABLE_LIMIT` entries, about half a
    second of the server's time. Past that bound a queue's counts cover only the jobs it
    would hand out next, and are lower than the truth: a name all of whose jobs wait behind
    more than that many others of the same queue is not listed (unhandled jobs are never
    claimed, so they are usually at the head of their priority). The steps are not one
    snapshot: a job that is claimed, retried or made due while the count runs may be counted
    twice or not at all. See docs/redis.md.
    """
    excluded = sorted(set(exclude_names))
    own, due, queues = await s._call("count_runnable_plan", c.us(now), c.opt(tenant))
    groups: list[list[tuple[str, str, str]]]
    if tenant is not None and int(own) < int(due):
        groups = [[("index", f"jobs:t:{tenant}", "")]]
    else:
        groups = [[("ready", f"ready:{q}", q), ("delayed", f"delayed:{q}", q)] for q in queues]
    tail = [c.us(now), c.opt(tenant), str(len(excluded)), *excluded]
    counts: dict[tuple[str, str], int] = {}
    for walks in groups:
        left = common.COUNT_RUNNABLE_LIMIT
        for kind, key, queue in walks:
            cursor = ""
            while left > 0:
                chunk = min(common.COUNT_RUNNABLE_CHUNK, left)
                cursor, seen, flat = await s._call(
                    "count_runnable", kind, key, queue, cursor, str(chunk), *tail
                )
                left -= int(seen)
                for i in range(0, len(flat), 3):
                    pair = (flat[i], flat[i + 1])
                    counts[pair] = counts.get(pair, 0) + int(flat[i + 2])
                if not cursor:
                    break
    return [
        RunnableCount(queue=queue, name=name, count=n)
        for (queue, name), n in sorted(counts.items())
    ]


# -- throughput: lua/zcounts.lua, lua/walk.lua, lua/buckets.lua ------------------------------


async def throughput(
    s: Runner,
    *,
    since: datetime,
    bucket_seconds: int,
    queue: str | None = None,
    tenant: str | None = None,
) -> list[ThroughputBucket]:
    """Counted from the finished indexes by ``finished_at`` (all jobs', a queue's or a
    tenant's): per bucket that holds any, one range lookup and one count, at most
    :data:`~common.BUCKET_STEPS` buckets a step. With both a queue and a tenant, the smaller
    of the two windows is walked in bounded steps, checking the other by membership."""
    width = bucket_seconds * 1_000_000
    frm = c.us(since)
    counts: dict[int, list[int]] = {}
    for i, (state, tag) in enumerate((("completed", "c"), ("failed", "f"))):
        if queue is not None and tenant is not None:
            by_tenant, by_queue = f"tdone{tag}:{tenant}", f"done{tag}:{queue}"
            n_tenant, n_queue = await s._call(
                "zcounts", "2", by_tenant, frm, "+inf", by_queue, frm, "+inf"
            )
            if int(n_tenant) <= int(n_queue):
                walked = (by_tenant, f"jobs:q:{queue}")
            else:
                walked = (by_queue, f"jobs:t:{tenant}")
            _, slots = await walk(s, walked[0], lo=frm, ins=[walked[1]], width=width)
        else:
            if queue is not None:
                key = f"done{tag}:{queue}"
            elif tenant is not None:
                key = f"tdone{tag}:{tenant}"
            else:
                key = f"done:{state}"
            slots = await _buckets(s, key, frm, width)
        for slot, n in slots.items():
            counts.setdefault(slot, [0, 0])[i] += n
    return [
        ThroughputBucket(
            start=datetime.fromtimestamp(slot * bucket_seconds, UTC),
            completed=pair[0],
            failed=pair[1],
        )
        for slot, pair in sorted(counts.items())
        if pair[0] or pair[1]
    ]


async def _buckets(s: Runner, key: str, frm: str, width: int) -> dict[int, int]:
    slots: dict[int, int] = {}
    while frm:
        frm, flat = await s._call("buckets", key, frm, str(width), str(common.BUCKET_STEPS))
        for i in range(0, len(flat), 2):
            slots[int(flat[i])] = int(flat[i + 1])
    return slots


# -- control: lua/cancel.lua, lua/retry.lua --------------------------------------------------


async def cancel(s: Runner, job_id: str, *, now: datetime) -> Job:
    """Cancel a pending, retrying or running job (``lua/cancel.lua``)."""
    res = await s._call("cancel", c.us(now), job_id)
    return _transition(job_id, res, JobState.CANCELLED)


async def retry(s: Runner, job_id: str, *, now: datetime) -> Job:
    """Run a failed or cancelled job again, now (``lua/retry.lua``)."""
    res = await s._call("retry", c.us(now), job_id)
    return _transition(job_id, res, JobState.PENDING)


def _transition(job_id: str, res: list[Any], target: JobState) -> Job:
    status = int(res[0])
    if status == -2:
        raise JobNotFoundError(job_id)
    if status == 0:
        current = JobState(res[1])
        if current is JobState.RUNNING and target is JobState.PENDING:
            raise InvalidTransitionError(job_id, "running", "pending", "the job is running")
        check_transition(job_id, current, target)
        raise InvalidTransitionError(job_id, current.value, target.value)  # pragma: no cover
    return c.job_from(res[1])
