"""The worker's hot path: claim, heartbeat, finish, rescue_expired and next_run_at. Each
operation runs the script of its name in ``lua/`` (rescue runs ``mark_silent.lua`` and
``rescue.lua``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta

from dispatch_core.cluster import WorkerInfo
from dispatch_core.models import Job, Outcome, OutcomeKind
from dispatch_core.storekit import STORE_SECTIONS, new_id, new_token
from dispatch_plugins.redis import codec as c
from dispatch_plugins.redis.ops import common
from dispatch_plugins.redis.ops.common import Runner

__all__ = [*STORE_SECTIONS["claim"]]


# -- lua/claim.lua ---------------------------------------------------------------------------


async def claim(
    s: Runner,
    *,
    worker_id: str,
    queues: Collection[str] | None,
    names: Collection[str] | None,
    limit: int,
    lease_seconds: float,
    now: datetime,
) -> list[Job]:
    """Claim up to ``limit`` jobs in one script: promote due delayed jobs, then take the
    ready ones in claim order across the queues served, past paused queues and within
    the queues' caps and token buckets."""
    if limit <= 0:
        return []
    args: list[str] = [
        worker_id,
        c.us(now),
        c.us(now + timedelta(seconds=lease_seconds)),
        str(limit),
        new_token() + ".",
    ]
    if queues is None:
        args.append("-1")
    else:
        args += (str(len(queues)), *queues)
    if names is None:
        args.append("-1")
    else:
        args += (str(len(names)), *names)
    res = await s._call("claim", *args)
    return [c.job_from(flat) for flat in res]


# -- lua/heartbeat.lua -----------------------------------------------------------------------


async def heartbeat(
    s: Runner,
    *,
    worker_id: str,
    leases: Mapping[str, str],
    lease_seconds: float,
    now: datetime,
    worker: WorkerInfo | None = None,
) -> set[str]:
    """Extend the leases and upsert the worker's row in one script; return the lost ids."""
    wargs = c.worker_args(worker, last_seen=now) if worker is not None else []
    args: list[str] = [
        c.us(now),
        c.us(now + timedelta(seconds=lease_seconds)),
        str(len(wargs)),
        *wargs,
        str(len(leases)),
    ]
    for job_id, token in leases.items():
        args += (job_id, token)
    return set(await s._call("heartbeat", *args))


# -- lua/finish.lua --------------------------------------------------------------------------

_OUTCOME_KINDS = {
    OutcomeKind.COMPLETED: "completed",
    OutcomeKind.RETRY: "retry",
    OutcomeKind.FAIL: "fail",
    OutcomeKind.RELEASE: "release",
}


async def finish(s: Runner, outcomes: Sequence[Outcome], *, now: datetime) -> list[bool]:
    """Write a batch of outcomes in one script, each fenced by its attempt token; a
    terminal failure writes its dead-letter entry in the same script."""
    if not outcomes:
        return []
    args: list[str] = [c.us(now), str(len(outcomes))]
    for o in outcomes:
        args += (
            o.job_id,
            o.attempt_token,
            _OUTCOME_KINDS[o.kind],
            c.opt(o.error),
            c.opt_json(o.result),
            "" if o.run_at is None else "=" + c.us(o.run_at),
            new_id("dlq") if o.kind is OutcomeKind.FAIL else "",
        )
    res = await s._call("finish", *args)
    return [bool(x) for x in res]


# -- lua/mark_silent.lua, lua/rescue.lua -----------------------------------------------------

#: Dead-letter ids handed to one rescue script; it asks for more when it needs them.
_RESCUE_DLQ_IDS = 32


async def rescue_expired(
    s: Runner, *, now: datetime, worker_timeout: float | None = None
) -> list[Job]:
    """Rescue expired leases (and, with ``worker_timeout``, the jobs of dead and stopped
    workers) in bounded steps: the worker rows are checked :data:`~common.WALK_CHUNK` at a
    time, then the running jobs :data:`~common.RESCUE_CHUNK` at a time."""
    revoke = False
    if worker_timeout is not None:
        cut = c.us(now - timedelta(seconds=worker_timeout))
        cursor = ""
        while True:
            cursor, gone = await s._call("mark_silent", cut, cursor, str(common.WALK_CHUNK))
            revoke = revoke or bool(int(gone))
            if not cursor:
                break
    out: list[Job] = []
    cursor = ""
    while True:
        ids = [new_id("dlq") for _ in range(_RESCUE_DLQ_IDS)]
        more, cursor, rescued = await s._call(
            "rescue",
            c.us(now),
            "1" if revoke else "0",
            cursor,
            str(common.RESCUE_CHUNK),
            str(len(ids)),
            *ids,
        )
        out += (c.job_from(flat) for flat in rescued)
        if not int(more):
            return out


# -- lua/next_run_at.lua ---------------------------------------------------------------------


async def next_run_at(
    s: Runner, *, queues: Collection[str] | None, names: Collection[str] | None
) -> datetime | None:
    """The earliest due time of the served queues' runnable jobs (paused queues left out;
    ``names`` is not looked at: a due job of another name makes the worker back off)."""
    args = ["-1"] if queues is None else [str(len(queues)), *queues]
    res = await s._call("next_run_at", *args)
    return None if res is None else c.from_us(res)
