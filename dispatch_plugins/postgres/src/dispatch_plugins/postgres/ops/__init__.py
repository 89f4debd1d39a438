"""Every store operation, written once as a generator of SQL steps, by contract section.

=================  ==================================================================
module             operations (see the sections of :class:`dispatch_core.store.Store`)
=================  ==================================================================
:mod:`.jobs`       producing, inspection and control: enqueue, get_job, list_jobs,
                   count_jobs, count_runnable, throughput, cancel, retry
:mod:`.claim`      the worker's hot path: claim, heartbeat, finish, rescue_expired,
                   next_run_at
:mod:`.limits`     the hot path's claim under the queues' limits: claim_limited (apart
                   from :mod:`.claim` only to keep each module short)
:mod:`.dlq`        the dead-letter queue: list_dlq, count_dlq, get_dlq, replay_dlq,
                   purge_dlq
:mod:`.cluster`    workers, the leader, cron, queues, retention (prune)
:mod:`.workflows`  durable workflows: runs, history, events
:mod:`.common`     the steps the runners execute, the schema's names, paged listings
=================  ==================================================================

Each operation takes the SQL it runs as its first argument: a small builder class, written
beside it, for one schema. :class:`Statements` is the union of every builder, built once per
schema and store setting (:func:`statements`); the stores pass it to every operation they run
(see :mod:`~dispatch_plugins.postgres.ops.common` for how an operation is run).
"""

from __future__ import annotations

from functools import lru_cache

from dispatch_core.storekit import STORE_OPERATIONS
from dispatch_plugins.postgres.ops.claim import (
    ClaimSQL,
    claim as claim,
    finish as finish,
    heartbeat as heartbeat,
    next_run_at as next_run_at,
    rescue_expired as rescue_expired,
)
from dispatch_plugins.postgres.ops.cluster import (
    ClusterSQL,
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
from dispatch_plugins.postgres.ops.common import (
    RELAXED,
    TRANSACTION,
    Copy,
    Step,
    Steps,
    Stmt,
    Tables,
)
from dispatch_plugins.postgres.ops.dlq import (
    DlqSQL,
    count_dlq as count_dlq,
    get_dlq as get_dlq,
    list_dlq as list_dlq,
    purge_dlq as purge_dlq,
    replay_dlq as replay_dlq,
)
from dispatch_plugins.postgres.ops.jobs import (
    COPY_MIN_ROWS,
    JobsSQL,
    cancel as cancel,
    count_jobs as count_jobs,
    count_runnable as count_runnable,
    enqueue as enqueue,
    get_job as get_job,
    list_jobs as list_jobs,
    retry as retry,
    throughput as throughput,
)
from dispatch_plugins.postgres.ops.limits import LimitedClaimSQL, claim_limited
from dispatch_plugins.postgres.ops.workflows import (
    WorkflowsSQL,
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
    "Stmt",
    "Copy",
    "TRANSACTION",
    "Step",
    "Steps",
    "Tables",
    "Statements",
    "statements",
    "RELAXED",
    "COPY_MIN_ROWS",
    "claim_limited",
    *STORE_OPERATIONS,
]


class Statements(JobsSQL, ClaimSQL, LimitedClaimSQL, DlqSQL, ClusterSQL, WorkflowsSQL):
    """The SQL of every operation, for one schema (built once per store; each statement on
    first use).

    Args:
        schema: The schema holding the tables (a plain lowercase identifier).
        relaxed_worker_commits: Commit the worker's hot-path writes (claim, heartbeat,
            finish, rescue) without waiting for the WAL flush; see :data:`RELAXED`.
    """


@lru_cache(maxsize=16)
def statements(schema: str, relaxed_worker_commits: bool = True) -> Statements:
    """The (cached) :class:`Statements` of ``schema``."""
    return Statements(schema, relaxed_worker_commits)
