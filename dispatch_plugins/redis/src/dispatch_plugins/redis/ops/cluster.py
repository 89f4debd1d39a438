"""The cluster: workers, the leader, cron, queues and retention. Each operation runs the
script of its name in ``lua/``, or names the ones it runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from dispatch_core.cluster import WorkerInfo
from dispatch_core.cron import CronEntry
from dispatch_core.errors import CronNotFoundError, JobIdTakenError
from dispatch_core.models import Job, NewJob
from dispatch_core.queues import QueueConfig, QueueStats
from dispatch_core.store import PruneCutoffs
from dispatch_core.storekit import STORE_SECTIONS, job_from_new
from dispatch_plugins.redis import codec as c
from dispatch_plugins.redis.ops import common
from dispatch_plugins.redis.ops.common import Runner

__all__ = [*STORE_SECTIONS["cluster"]]


async def _zhashes(s: Runner, key: str, hash_prefix: str) -> list[Any]:
    """The hashes of a sorted set's members, in its order, :data:`~common.WALK_CHUNK` a step
    (``lua/zhashes.lua``)."""
    out: list[Any] = []
    cursor = ""
    while True:
        cursor, rows = await s._call("zhashes", key, hash_prefix, cursor, str(common.WALK_CHUNK))
        out += rows
        if not cursor:
            return out


# -- workers: lua/register_worker.lua, lua/deregister_worker.lua, lua/zhashes.lua ------------


async def register_worker(s: Runner, worker: WorkerInfo) -> None:
    """Write the worker's row, replacing any."""
    await s._call("register_worker", *c.worker_args(worker))


async def deregister_worker(s: Runner, worker_id: str, *, now: datetime) -> None:
    """Mark the worker stopped and give up the leadership it holds."""
    await s._call("deregister_worker", worker_id, c.us(now))


async def list_workers(s: Runner) -> list[WorkerInfo]:
    """The worker rows in start order, and which one leads."""
    leader = await s._cmd(lambda cl: cl.hget(s._key("leader"), "holder"))
    return [c.worker_from(flat, leader or "") for flat in await _zhashes(s, "workers", "worker:")]


# -- the leader: lua/acquire_leadership.lua, lua/release_leadership.lua, a plain read --------


async def acquire_leadership(s: Runner, *, worker_id: str, ttl: float, now: datetime) -> bool:
    """Take or renew the lease in one script: a compare-and-set on the holder and expiry
    (times are the callers', like every other lease of the store)."""
    until = c.us(now + timedelta(seconds=ttl))
    return bool(await s._call("acquire_leadership", worker_id, c.us(now), until))


async def release_leadership(s: Runner, worker_id: str) -> None:
    """Give up the leader lease, if ``worker_id`` holds it."""
    await s._call("release_leadership", worker_id)


async def get_leader(s: Runner, *, now: datetime) -> str | None:
    """The holder of the leader lease unexpired at ``now``, if any (a plain read)."""
    key = s._key("leader")
    h = await s._cmd(lambda cl: cl.hgetall(key))
    if not h or int(h["expires_at"]) <= int(c.us(now)):
        return None
    holder: str = h["holder"]
    return holder


# -- cron: lua/upsert_cron.lua, lua/set_cron_enabled.lua, lua/fire_cron.lua, ... -------------


async def upsert_cron(s: Runner, entries: Sequence[CronEntry], *, now: datetime) -> None:
    """Insert or update the entries in one script (an update keeps enabled and the run
    history, and moves ``next_run_at`` only when the schedule changed)."""
    if not entries:
        return
    args: list[str] = [c.us(now), str(len(entries))]
    for e in entries:
        args += c.cron_args(e)
    await s._call("upsert_cron", *args)


async def list_cron(s: Runner) -> list[CronEntry]:
    """The cron entries by name, :data:`~common.WALK_CHUNK` a step."""
    return [c.cron_from(flat) for flat in await _zhashes(s, "crons", "cron:")]


async def get_cron(s: Runner, name: str) -> CronEntry:
    """The entry ``name`` (one ``HGETALL``), or :class:`CronNotFoundError`."""
    key = s._key("cron", name)
    h = await s._cmd(lambda cl: cl.hgetall(key))
    if not h:
        raise CronNotFoundError(name)
    return c.cron_from([x for kv in h.items() for x in kv])


async def set_cron_enabled(
    s: Runner, name: str, *, enabled: bool, next_run_at: datetime, now: datetime
) -> CronEntry:
    """Enable (from ``next_run_at``) or disable the entry ``name``."""
    res = await s._call(
        "set_cron_enabled", name, "1" if enabled else "0", c.us(next_run_at), c.us(now)
    )
    if int(res[0]) == -2:
        raise CronNotFoundError(name)
    return c.cron_from(res[1])


async def fire_cron(
    s: Runner,
    *,
    name: str,
    tick: datetime,
    next_run_at: datetime,
    job: NewJob | None,
    now: datetime,
) -> Job | None:
    """Fire the entry for ``tick`` and enqueue ``job`` (deduplicated by its unique key)
    in one script; ``None`` when it is not due at that tick, or fires no job."""
    jobs = [job] if job is not None else []
    res = await s._call(
        "fire_cron",
        c.us(now),
        name,
        c.us(tick),
        c.us(next_run_at),
        str(len(jobs)),
        *c.job_args(jobs),
    )
    status = int(res[0])
    if status == -1:
        raise JobIdTakenError(res[1])
    if status == 0 or job is None:
        return None
    return job_from_new(job) if res[1] == 0 else c.job_from(res[1])


async def delete_cron(s: Runner, name: str) -> bool:
    """Delete the entry ``name``; whether there was one."""
    return bool(await s._call("delete_cron", name))


# -- queues: lua/set_queue.lua, lua/pause_queue.lua, lua/queue_stats.lua ---------------------


async def set_queue(s: Runner, config: QueueConfig) -> None:
    """Set the queue's limits, trimming or dropping its token buckets to fit."""
    await s._call(
        "set_queue",
        config.name,
        c.opt(None if config.concurrency is None else str(config.concurrency)),
        c.opt(None if config.rate is None else repr(float(config.rate))),
        c.opt(None if config.burst is None else str(config.burst)),
        str(config.bucket_size),
        "1" if config.per_tenant else "0",
    )


async def pause_queue(s: Runner, name: str, *, paused: bool) -> None:
    """Pause or resume the queue."""
    await s._call("pause_queue", name, "1" if paused else "0")


async def list_queues(s: Runner, *, now: datetime) -> list[QueueStats]:
    """The queues with a row or a job, read with ``SSCAN`` and :data:`~common.QUEUE_CHUNK`
    queues a step."""
    names: set[str] = set()
    for key in ("queues", "qnames"):
        names.update(await s._scan("sscan", s._key(key), count=common.QUEUE_CHUNK))
    since, until = c.us(now - timedelta(minutes=1)), c.us(now)
    ordered = sorted(names)
    out = []
    for i in range(0, len(ordered), common.QUEUE_CHUNK):
        rows = await s._call("queue_stats", since, until, *ordered[i : i + common.QUEUE_CHUNK])
        for name, cfg, depth, running, done in rows:
            h = c.as_dict(cfg)
            out.append(
                QueueStats(
                    name=name,
                    config=c.queue_config_from(name, cfg),
                    paused=h.get("paused") == "1",
                    depth=int(depth),
                    running=int(running),
                    completed_last_minute=int(done),
                )
            )
    return out


# -- retention: lua/prune_jobs.lua, lua/prune_dlq.lua, lua/prune_workers.lua -----------------


async def prune(s: Runner, cutoffs: PruneCutoffs, *, limit: int = 10_000) -> int:
    """Delete in bounded steps of :data:`~common.DELETE_CHUNK` rows, oldest first, at most
    ``limit`` of each kind (each finished state, dead letters, workers)."""
    total = 0
    for state, cut in (
        ("completed", cutoffs.completed),
        ("failed", cutoffs.failed),
        ("cancelled", cutoffs.cancelled),
    ):
        if cut is not None:
            total += await _prune_steps(s, "prune_jobs", state, c.us(cut), limit=limit)
    if cutoffs.dlq is not None:
        total += await _prune_steps(s, "prune_dlq", c.us(cutoffs.dlq), limit=limit)
    if cutoffs.workers is not None:
        cut_w, cursor, left = c.us(cutoffs.workers), "", limit
        while left > 0:
            n = min(common.DELETE_CHUNK, left)
            deleted, cursor = await s._call("prune_workers", cut_w, cursor, str(n))
            total += int(deleted)
            left -= int(deleted)
            if not cursor:
                break
    return total


async def _prune_steps(s: Runner, script: str, *args: str, limit: int) -> int:
    done, left = 0, limit
    while left > 0:
        n = min(common.DELETE_CHUNK, left)
        deleted, seen = await s._call(script, *args, str(n))
        done += int(deleted)
        left -= int(deleted)
        if int(seen) < n:
            break
    return done
