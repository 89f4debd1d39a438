"""The store's operations, by section of the :class:`~dispatch_core.store.Store` contract.

Each operation is a function taking the store (as a :class:`~.common.Runner`) first; the
store's methods call them. An operation runs the Lua script of its own name
(``lua/<name>.lua``, see :mod:`dispatch_plugins.redis.lua`) or names the ones it runs.

* :mod:`.jobs`: producing, inspection and control.
* :mod:`.claim`: the worker's hot path.
* :mod:`.dlq`: the dead-letter queue.
* :mod:`.cluster`: workers, the leader, cron, queues and retention.
* :mod:`.workflows`: durable workflow runs, steps and events.
* :mod:`.common`: the runner, the bounds of the script calls, listings and walks.
"""

from __future__ import annotations

from dispatch_plugins.redis.ops.claim import (
    claim,
    finish,
    heartbeat,
    next_run_at,
    rescue_expired,
)
from dispatch_plugins.redis.ops.cluster import (
    acquire_leadership,
    delete_cron,
    deregister_worker,
    fire_cron,
    get_cron,
    get_leader,
    list_cron,
    list_queues,
    list_workers,
    pause_queue,
    prune,
    register_worker,
    release_leadership,
    set_cron_enabled,
    set_queue,
    upsert_cron,
)
from dispatch_plugins.redis.ops.dlq import count_dlq, get_dlq, list_dlq, purge_dlq, replay_dlq
from dispatch_plugins.redis.ops.jobs import (
    cancel,
    count_jobs,
    count_runnable,
    enqueue,
    get_job,
    list_jobs,
    retry,
    throughput,
)
from dispatch_plugins.redis.ops.workflows import (
    create_run,
    get_run,
    list_runs,
    list_steps,
    save_step,
    send_event,
    set_run_version,
    take_event,
    update_run,
)

__all__ = [
    # jobs
    "enqueue",
    "get_job",
    "list_jobs",
    "count_jobs",
    "count_runnable",
    "throughput",
    "cancel",
    "retry",
    # claim
    "claim",
    "heartbeat",
    "finish",
    "rescue_expired",
    "next_run_at",
    # dlq
    "list_dlq",
    "count_dlq",
    "get_dlq",
    "replay_dlq",
    "purge_dlq",
    # cluster
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
    # workflows
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
