"""The versioned schema: every migration, in order. Never edit a released one; append.

Each statement is a template: ``{s}`` stands for the store's schema, already quoted. Times are
``timestamptz``; payload, headers and result are ``jsonb`` (headers and result are NULL when
empty); ids are ``text COLLATE "C"`` so that they sort byte-wise, as Python sorts them.
"""

from __future__ import annotations

import attrs

__all__ = [
    "Migration",
    "MIGRATIONS",
    "MIGRATIONS_TABLE",
    "RUNNABLE",
    "FINISHED",
    "LIMITED",
    "KEY_SCOPE",
]

#: Bookkeeping table (in the store's schema): one row per applied migration.
MIGRATIONS_TABLE = "dispatch_migrations"

#: The runnable states, as SQL; must match the partial indexes' WHERE for the planner to use
#: them.
RUNNABLE = "state IN ('pending', 'retrying')"

#: The terminal states, as SQL; must match jobs_finished_idx's WHERE.
FINISHED = "state IN ('completed', 'failed', 'cancelled')"

#: A queue row with a cap or a rate limit, as SQL (on the ``queues`` table).
LIMITED = "(concurrency IS NOT NULL OR rate IS NOT NULL)"

#: A job's scope for its unique key, as SQL: ``'=' || tenant``, or ``''`` without a tenant.
#: NULLs never collide in a unique index (``NULLS NOT DISTINCT`` needs PostgreSQL 15), yet
#: jobs without a tenant must collide with each other; the prefix keeps a tenant named ``''``
#: apart from them. It is the second column of jobs_unique_key_tenant_idx (migration 4), and
#: ``ON CONFLICT`` targets must spell it so for the planner to infer that index.
KEY_SCOPE = "coalesce('=' || tenant, '')"


@attrs.frozen
class Migration:
    """One schema step, applied in the migration transaction."""

    version: int
    name: str
    #: Statement templates run in order; ``{s}`` is replaced by the quoted schema name.
    statements: tuple[str, ...]

    def sql(self, quoted_schema: str) -> list[str]:
        """The statements for the schema ``quoted_schema`` (already double-quoted)."""
        return [statement.replace("{s}", quoted_schema) for statement in self.statements]


_INITIAL = (
    """
    CREATE TABLE {s}.jobs (
        id               text COLLATE "C" NOT NULL PRIMARY KEY,
        name             text             NOT NULL,
        queue            text             NOT NULL,
        payload          jsonb            NOT NULL,
        state            text             NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'running', 'retrying', 'completed', 'failed',
                             'cancelled')),
        priority         integer          NOT NULL,
        attempt          integer          NOT NULL DEFAULT 0,
        max_attempts     integer          NOT NULL,
        timeout          double precision,
        run_at           timestamptz      NOT NULL,
        created_at       timestamptz      NOT NULL,
        updated_at       timestamptz      NOT NULL,
        started_at       timestamptz,
        finished_at      timestamptz,
        last_error       text,
        unique_key       text,
        tenant           text,
        headers          jsonb,
        result           jsonb,
        worker_id        text,
        attempt_token    text,
        lease_expires_at timestamptz
    )
    """,
    # The claim order over runnable jobs only: claims take rows out of it and enqueues add
    # them, so it stays as small as the backlog however many finished jobs the table keeps.
    f"""
    CREATE INDEX jobs_claim_idx ON {{s}}.jobs (priority DESC, run_at, id) WHERE {RUNNABLE}
    """,
    # next_run_at(): the earliest runnable job, without scanning every priority.
    f"""
    CREATE INDEX jobs_due_idx ON {{s}}.jobs (run_at) WHERE {RUNNABLE}
    """,
    # rescue_expired(): running jobs by lease end.
    """
    CREATE INDEX jobs_lease_idx ON {s}.jobs (lease_expires_at) WHERE state = 'running'
    """,
    """
    CREATE UNIQUE INDEX jobs_unique_key_idx ON {s}.jobs (unique_key)
        WHERE unique_key IS NOT NULL
    """,
    """
    CREATE TABLE {s}.dlq (
        id            text COLLATE "C" NOT NULL PRIMARY KEY,
        job_id        text             NOT NULL,
        name          text             NOT NULL,
        queue         text             NOT NULL,
        payload       jsonb            NOT NULL,
        error         text             NOT NULL,
        attempts      integer          NOT NULL,
        max_attempts  integer          NOT NULL,
        priority      integer          NOT NULL,
        timeout       double precision,
        tenant        text,
        headers       jsonb,
        failed_at     timestamptz      NOT NULL,
        replayed_at   timestamptz,
        replay_job_id text
    )
    """,
    "CREATE INDEX dlq_failed_at_idx ON {s}.dlq (failed_at, id)",
)

_CLUSTER = (
    # One row per worker process; heartbeats upsert it, the leader marks it dead.
    """
    CREATE TABLE {s}.workers (
        id          text COLLATE "C" NOT NULL PRIMARY KEY,
        hostname    text             NOT NULL,
        pid         integer          NOT NULL,
        queues      text[],
        concurrency integer          NOT NULL,
        version     text             NOT NULL,
        started_at  timestamptz      NOT NULL,
        last_seen   timestamptz      NOT NULL,
        state       text             NOT NULL
            CHECK (state IN ('running', 'stopped', 'dead'))
    )
    """,
    # rescue_expired() (running workers by last_seen) and prune() (stopped and dead ones).
    "CREATE INDEX workers_state_idx ON {s}.workers (state, last_seen)",
    # The leader lease: at most one row, taken and renewed by one atomic upsert.
    """
    CREATE TABLE {s}.leader (
        name       text        NOT NULL PRIMARY KEY,
        holder     text        NOT NULL,
        expires_at timestamptz NOT NULL
    )
    """,
    """
    CREATE TABLE {s}.cron (
        name          text COLLATE "C" NOT NULL PRIMARY KEY,
        expr          text             NOT NULL,
        timezone      text             NOT NULL,
        job_name      text             NOT NULL,
        payload       jsonb            NOT NULL,
        queue         text,
        misfire       text             NOT NULL,
        misfire_grace double precision NOT NULL,
        enabled       boolean          NOT NULL,
        next_run_at   timestamptz      NOT NULL,
        last_run_at   timestamptz,
        last_job_id   text,
        created_at    timestamptz      NOT NULL,
        updated_at    timestamptz      NOT NULL
    )
    """,
    # Queue limits and the pause flag; a queue without a row has neither. The queue-wide
    # token bucket lives in the row (tokens NULL: full), so the claim that locks the row to
    # enforce the limits updates it in place. Names have the collation of jobs.queue, so that
    # a join on them can use jobs_queue_idx.
    """
    CREATE TABLE {s}.queues (
        name        text             NOT NULL PRIMARY KEY,
        configured  boolean          NOT NULL DEFAULT false,
        concurrency integer,
        rate        double precision,
        burst       integer,
        per_tenant  boolean          NOT NULL DEFAULT false,
        paused      boolean          NOT NULL DEFAULT false,
        tokens      double precision,
        tokens_at   timestamptz
    )
    """,
    # Per-tenant token buckets of per_tenant queues. tenant_key is '' for jobs without a
    # tenant and '=' || tenant otherwise, so that NULL has a key of its own. Written only
    # under the lock of the queue's row.
    """
    CREATE TABLE {s}.queue_buckets (
        queue      text             NOT NULL,
        tenant_key text             NOT NULL,
        tokens     double precision NOT NULL,
        updated_at timestamptz      NOT NULL,
        PRIMARY KEY (queue, tenant_key)
    )
    """,
    # Runnable jobs of one queue in claim order: the claim of limited queues and the check
    # for their due jobs, without walking the whole backlog of the other queues.
    f"""
    CREATE INDEX jobs_queue_idx ON {{s}}.jobs (queue, priority DESC, run_at, id)
        WHERE {RUNNABLE}
    """,
    # prune() and list_queues(): finished jobs by state and age. Only a job's last write
    # (its end) adds an entry.
    f"""
    CREATE INDEX jobs_finished_idx ON {{s}}.jobs (state, finished_at) WHERE {FINISHED}
    """,
)

_WORKFLOWS = (
    # Durable workflow runs. generation counts the parks; the wake-up job of park n has the
    # unique key 'wf:<id>:<n>' (in jobs). update_run and send_event lock the run's row first,
    # so that a park and an event cannot interleave.
    """
    CREATE TABLE {s}.workflow_runs (
        id              text COLLATE "C" NOT NULL PRIMARY KEY,
        name            text             NOT NULL,
        version         integer          NOT NULL,
        input           jsonb            NOT NULL,
        state           text             NOT NULL
            CHECK (state IN ('running', 'sleeping', 'waiting', 'completed', 'failed',
                             'cancelled')),
        created_at      timestamptz      NOT NULL,
        updated_at      timestamptz      NOT NULL,
        finished_at     timestamptz,
        output          jsonb,
        error           text,
        tenant          text,
        parent_run_id   text COLLATE "C",
        correlation_key text,
        wake_at         timestamptz,
        waiting_for     text,
        generation      integer          NOT NULL DEFAULT 0
    )
    """,
    # list_runs(): each filter with the newest-first order; the optional columns index only
    # the runs that have them.
    "CREATE INDEX workflow_runs_state_idx ON {s}.workflow_runs (state, id)",
    "CREATE INDEX workflow_runs_name_idx ON {s}.workflow_runs (name, id)",
    """
    CREATE INDEX workflow_runs_tenant_idx ON {s}.workflow_runs (tenant, id)
        WHERE tenant IS NOT NULL
    """,
    """
    CREATE INDEX workflow_runs_parent_idx ON {s}.workflow_runs (parent_run_id, id)
        WHERE parent_run_id IS NOT NULL
    """,
    # Events addressed to a correlation key reach its runs through this one.
    """
    CREATE INDEX workflow_runs_correlation_idx ON {s}.workflow_runs (correlation_key, id)
        WHERE correlation_key IS NOT NULL
    """,
    # A run's history, one row per primitive call (seq). Finished rows are never rewritten.
    """
    CREATE TABLE {s}.workflow_steps (
        run_id      text COLLATE "C" NOT NULL
            REFERENCES {s}.workflow_runs (id) ON DELETE CASCADE,
        seq         integer          NOT NULL,
        name        text             NOT NULL,
        kind        text             NOT NULL
            CHECK (kind IN ('step', 'sleep', 'event', 'child', 'compensation')),
        state       text             NOT NULL
            CHECK (state IN ('pending', 'completed', 'failed')),
        started_at  timestamptz      NOT NULL,
        finished_at timestamptz,
        output      jsonb,
        error       text,
        attempts    integer          NOT NULL,
        wake_at     timestamptz,
        PRIMARY KEY (run_id, seq)
    )
    """,
    # Events addressed to a run; consumed_seq is the seq of the wait that took it.
    """
    CREATE TABLE {s}.workflow_events (
        id           text COLLATE "C" NOT NULL PRIMARY KEY,
        run_id       text COLLATE "C" NOT NULL
            REFERENCES {s}.workflow_runs (id) ON DELETE CASCADE,
        name         text             NOT NULL,
        payload      jsonb            NOT NULL,
        created_at   timestamptz      NOT NULL,
        tenant       text,
        consumed_seq integer,
        consumed_at  timestamptz
    )
    """,
    # take_event() and the park check: a run's unconsumed events of one name, oldest first.
    """
    CREATE INDEX workflow_events_unconsumed_idx
        ON {s}.workflow_events (run_id, name, created_at, id) WHERE consumed_seq IS NULL
    """,
    # take_event()'s replay (the event a seq consumed), and the cascade from a deleted run.
    "CREATE INDEX workflow_events_run_idx ON {s}.workflow_events (run_id, consumed_seq)",
)

_TENANT_KEYS = (
    # Unique keys are unique within a tenant (jobs without one form a scope of their own),
    # no longer across the schema. The key leads, so that a lookup by key alone still seeks;
    # the index stays partial, so jobs without a key (COPY's bulk path) cost nothing more.
    # The second column is KEY_SCOPE, spelled out: a released migration never changes. Built
    # inside the migration's transaction (CONCURRENTLY cannot be), so enqueues wait for it.
    """
    CREATE UNIQUE INDEX jobs_unique_key_tenant_idx
        ON {s}.jobs (unique_key, (coalesce('=' || tenant, ''))) WHERE unique_key IS NOT NULL
    """,
    "DROP INDEX {s}.jobs_unique_key_idx",
    # Dead-letter entries never replayed, in failure order: "replay the oldest" and their
    # count skip the replayed entries that stay in the queue. Only failures and replays
    # write it.
    "CREATE INDEX dlq_unreplayed_idx ON {s}.dlq (id) WHERE replayed_at IS NULL",
)

_WORKER_NAMES = (
    # The job names a worker runs; NULL: not reported (rows written before this version, or
    # by an older worker). A nullable column without a default: no table rewrite, and only
    # worker rows change (no job index is touched).
    "ALTER TABLE {s}.workers ADD COLUMN names text[]",
)

#: Every migration, by ascending version.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(version=1, name="0001_initial", statements=_INITIAL),
    Migration(version=2, name="0002_cluster", statements=_CLUSTER),
    Migration(version=3, name="0003_workflows", statements=_WORKFLOWS),
    Migration(version=4, name="0004_tenant_unique_keys", statements=_TENANT_KEYS),
    Migration(version=5, name="0005_worker_names", statements=_WORKER_NAMES),
)
