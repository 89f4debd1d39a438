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

from dispatch_plugins.sqlite.ops.claim import (
    LimitedQueues,
    claim,
    finish,
    heartbeat,
    next_run_at,
    rescue_expired,
)
from dispatch_plugins.sqlite.ops.cluster import (
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
from dispatch_plugins.sqlite.ops.dlq import count_dlq, get_dlq, list_dlq, purge_dlq, replay_dlq
from dispatch_plugins.sqlite.ops.jobs import (
    cancel,
    count_jobs,
    count_runnable,
    enqueue,
    get_job,
    list_jobs,
    retry,
    throughput,
)
from dispatch_plugins.sqlite.ops.workflows import (
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
    "LimitedQueues",
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
