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

from dispatch_core.storekit import STORE_OPERATIONS
from dispatch_plugins.redis.ops.claim import (
    claim as claim,
    finish as finish,
    heartbeat as heartbeat,
    next_run_at as next_run_at,
    rescue_expired as rescue_expired,
)
from dispatch_plugins.redis.ops.cluster import (
    acquire_leadership as acquire_leadership,
    delete_cron as delete_cron,
    deregister_worker as deregister_worker,
    fire_cron as fire_cron,
    get_cron as get_cron,
    get_leader as get_leader,
    list_cron as list_cron,
    list_queues as list_queues,
    list_workers as list_workers,
    pause_queue as pause_queue,
    prune as prune,
    register_worker as register_worker,
    release_leadership as release_leadership,
    set_cron_enabled as set_cron_enabled,
    set_queue as set_queue,
    upsert_cron as upsert_cron,
)
from dispatch_plugins.redis.ops.dlq import (
    count_dlq as count_dlq,
    get_dlq as get_dlq,
    list_dlq as list_dlq,
    purge_dlq as purge_dlq,
    replay_dlq as replay_dlq,
)
from dispatch_plugins.redis.ops.jobs import (
    cancel as cancel,
    count_jobs as count_jobs,
    count_runnable as count_runnable,
    enqueue as enqueue,
    get_job as get_job,
    list_jobs as list_jobs,
    retry as retry,
    throughput as throughput,
)
from dispatch_plugins.redis.ops.workflows import (
    create_run as create_run,
    get_run as get_run,
    list_runs as list_runs,
    list_steps as list_steps,
    save_step as save_step,
    send_event as send_event,
    set_run_version as set_run_version,
    take_event as take_event,
    update_run as update_run,
)

__all__ = [
    *STORE_OPERATIONS,
]
