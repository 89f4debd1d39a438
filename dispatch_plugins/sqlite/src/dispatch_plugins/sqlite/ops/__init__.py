"""Every store operation as a plain function of a ``sqlite3`` connection.

The async :class:`~dispatch_plugins.sqlite.store.SQLiteStore` runs these functions on its
aiosqlite connection's thread (one thread hop per operation, however many statements it runs);
the blocking :class:`~dispatch_plugins.sqlite.sync.SQLiteSyncStore` calls them directly. So the
SQL and the row decoding exist once.

The modules follow the sections of the :class:`~dispatch_core.store.Store` contract, each
statement beside the function that runs it: :mod:`.jobs` (producing, inspection and control),
:mod:`.claim` (the worker's hot path), :mod:`.dlq`, :mod:`.cluster` (workers, the leader,
cron, queues, retention) and :mod:`.workflows`; :mod:`.common` holds what several share.

Connections are in autocommit mode: a lone statement is its own transaction; several writes
that must land together run inside :func:`~dispatch_plugins.sqlite.connection.write_transaction`.
"""

from __future__ import annotations

from dispatch_core.storekit import STORE_OPERATIONS
from dispatch_plugins.sqlite.ops.claim import (
    LimitedQueues,
    claim as claim,
    finish as finish,
    heartbeat as heartbeat,
    next_run_at as next_run_at,
    rescue_expired as rescue_expired,
)
from dispatch_plugins.sqlite.ops.cluster import (
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
from dispatch_plugins.sqlite.ops.dlq import (
    count_dlq as count_dlq,
    get_dlq as get_dlq,
    list_dlq as list_dlq,
    purge_dlq as purge_dlq,
    replay_dlq as replay_dlq,
)
from dispatch_plugins.sqlite.ops.jobs import (
    cancel as cancel,
    count_jobs as count_jobs,
    count_runnable as count_runnable,
    enqueue as enqueue,
    get_job as get_job,
    list_jobs as list_jobs,
    retry as retry,
    throughput as throughput,
)
from dispatch_plugins.sqlite.ops.workflows import (
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
    "LimitedQueues",
    *STORE_OPERATIONS,
]
