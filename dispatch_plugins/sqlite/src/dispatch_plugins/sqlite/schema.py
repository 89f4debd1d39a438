"""The versioned schema: every migration, in order. Never edit a released one; append.

Times are INTEGER microseconds since the epoch (UTC); payload, headers and result are JSON
text (headers and result are NULL when empty).
"""

from __future__ import annotations

import attrs

__all__ = ["Migration", "MIGRATIONS", "MIGRATIONS_TABLE", "KEY_SCOPE"]

#: Bookkeeping table: one row per applied migration.
MIGRATIONS_TABLE = "dispatch_migrations"

#: A job's scope for its unique key, as SQL: ``'=' || tenant``, or ``''`` without a tenant.
#: NULLs never collide in a unique index, yet jobs without a tenant must collide with each
#: other; the prefix keeps a tenant named ``''`` apart from them. It is the second column of
#: jobs_unique_key_tenant_idx (migration 4), which ``ON CONFLICT`` targets must match.
KEY_SCOPE = "coalesce('=' || tenant, '')"


@attrs.frozen
class Migration:
    """One schema step, applied in a single transaction."""

    version: int
    name: str
    #: Statements run in order (``executescript`` cannot run inside our transaction).
    statements: tuple[str, ...]


_INITIAL = (
    """
    CREATE TABLE jobs (
        id               TEXT    NOT NULL PRIMARY KEY,
        name             TEXT    NOT NULL,
        queue            TEXT    NOT NULL,
        payload          TEXT    NOT NULL,
        -- pending | running | retrying | completed | failed | cancelled. No CHECK: an IN
        -- list there costs ~2 us per inserted row, a third of a bulk insert.
        state            TEXT    NOT NULL,
        priority         INTEGER NOT NULL,
        attempt          INTEGER NOT NULL DEFAULT 0,
        max_attempts     INTEGER NOT NULL,
        timeout          REAL,
        run_at           INTEGER NOT NULL,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL,
        started_at       INTEGER,
        finished_at      INTEGER,
        last_error       TEXT,
        unique_key       TEXT,
        tenant           TEXT,
        headers          TEXT,
        result           TEXT,
        worker_id        TEXT,
        attempt_token    TEXT,
        lease_expires_at INTEGER
    ) WITHOUT ROWID
    """,
    # The claim order over runnable jobs only: claims take rows out of it and enqueues add
    # them, so it stays as small as the backlog however many finished jobs the table keeps.
    """
    CREATE INDEX jobs_claim_idx ON jobs (priority DESC, run_at, id)
        WHERE state IN ('pending', 'retrying')
    """,
    # next_run_at(): the earliest runnable job, without scanning every priority.
    """
    CREATE INDEX jobs_due_idx ON jobs (run_at) WHERE state IN ('pending', 'retrying')
    """,
    # rescue_expired(): running jobs by lease end.
    """
    CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE state = 'running'
    """,
    """
    CREATE UNIQUE INDEX jobs_unique_key_idx ON jobs (unique_key) WHERE unique_key IS NOT NULL
    """,
    """
    CREATE TABLE dlq (
        id            TEXT    NOT NULL PRIMARY KEY,
        job_id        TEXT    NOT NULL,
        name          TEXT    NOT NULL,
        queue         TEXT    NOT NULL,
        payload       TEXT    NOT NULL,
        error         TEXT    NOT NULL,
        attempts      INTEGER NOT NULL,
        max_attempts  INTEGER NOT NULL,
        priority      INTEGER NOT NULL,
        timeout       REAL,
        tenant        TEXT,
        headers       TEXT,
        failed_at     INTEGER NOT NULL,
        replayed_at   INTEGER,
        replay_job_id TEXT
    )
    """,
    "CREATE INDEX dlq_failed_at_idx ON dlq (failed_at, id)",
)

_CLUSTER = (
    # Every index costs each claim, finish or enqueue that touches it (about 1 us a job each),
    # so this version adds the one retention needs and pays for it with two it drops:
    # next_run_at() now walks jobs_claim_idx (one seek per distinct priority), and
    # jobs_running_idx below replaces jobs_lease_idx.
    "DROP INDEX jobs_due_idx",
    "DROP INDEX jobs_lease_idx",
    # Running jobs by queue and tenant, for the concurrency caps of claim and the counts of
    # list_queues; rescue scans it for expired leases and dead workers' jobs. Every query on
    # it reads the index alone: it holds each column they use, state included (SQLite does
    # not count a partial index's WHERE column as covered).
    """
    CREATE INDEX jobs_running_idx ON jobs (queue, tenant, lease_expires_at, worker_id, state)
        WHERE state = 'running'
    """,
    # Finished jobs by end time: prune takes the oldest of each state and list_queues counts
    # the last minute's completions; queue makes it cover list_queues' names.
    """
    CREATE INDEX jobs_finished_idx ON jobs (state, finished_at, queue)
        WHERE finished_at IS NOT NULL
    """,
    """
    CREATE TABLE workers (
        id          TEXT    NOT NULL PRIMARY KEY,
        hostname    TEXT    NOT NULL,
        pid         INTEGER NOT NULL,
        queues      TEXT,    -- JSON array of names; NULL means every queue
        concurrency INTEGER NOT NULL,
        version     TEXT    NOT NULL,
        started_at  INTEGER NOT NULL,
        last_seen   INTEGER NOT NULL,
        state       TEXT    NOT NULL  -- running | stopped | dead
    ) WITHOUT ROWID
    """,
    "CREATE INDEX workers_state_idx ON workers (state, last_seen)",
    # The leader lease: at most one row, taken and renewed by one upsert.
    """
    CREATE TABLE leader (
        id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
        holder     TEXT    NOT NULL,
        expires_at INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE cron (
        name          TEXT    NOT NULL PRIMARY KEY,
        expr          TEXT    NOT NULL,
        timezone      TEXT    NOT NULL,
        job_name      TEXT    NOT NULL,
        payload       TEXT    NOT NULL,
        queue         TEXT,
        misfire       TEXT    NOT NULL,
        misfire_grace REAL    NOT NULL,
        enabled       INTEGER NOT NULL,
        next_run_at   INTEGER NOT NULL,
        last_run_at   INTEGER,
        last_job_id   TEXT,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
    # A queue has a row once it was configured or paused. tokens / tokens_at hold the
    # queue-wide token bucket (NULL: full); per-tenant buckets live in queue_buckets.
    """
    CREATE TABLE queues (
        name        TEXT    NOT NULL PRIMARY KEY,
        configured  INTEGER NOT NULL DEFAULT 0,
        concurrency INTEGER,
        rate        REAL,
        burst       INTEGER,
        per_tenant  INTEGER NOT NULL DEFAULT 0,
        paused      INTEGER NOT NULL DEFAULT 0,
        tokens      REAL,
        tokens_at   INTEGER
    ) WITHOUT ROWID
    """,
    # tenant is the JSON text of the job's tenant ('null' for jobs without one), so that no
    # tenant name can collide with "no tenant".
    """
    CREATE TABLE queue_buckets (
        queue     TEXT    NOT NULL,
        tenant    TEXT    NOT NULL,
        tokens    REAL    NOT NULL,
        tokens_at INTEGER NOT NULL,
        PRIMARY KEY (queue, tenant)
    ) WITHOUT ROWID
    """,
)

_WORKFLOWS = (
    # Durable workflow runs. input and output are JSON text (output NULL until there is one);
    # generation counts the parks, and names each park's wake-up job (wf:<id>:<generation>).
    """
    CREATE TABLE workflow_runs (
        id              TEXT    NOT NULL PRIMARY KEY,
        name            TEXT    NOT NULL,
        version         INTEGER NOT NULL,
        input           TEXT    NOT NULL,
        -- running | sleeping | waiting | completed | failed | cancelled
        state           TEXT    NOT NULL,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        finished_at     INTEGER,
        output          TEXT,
        error           TEXT,
        tenant          TEXT,
        parent_run_id   TEXT,
        correlation_key TEXT,
        wake_at         INTEGER,
        waiting_for     TEXT,
        generation      INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID
    """,
    # list_runs pages by id, newest first, within each filter; the rarely set columns get
    # partial indexes. correlation_key also resolves an event's key to its runs.
    "CREATE INDEX workflow_runs_state_idx ON workflow_runs (state, id)",
    "CREATE INDEX workflow_runs_name_idx ON workflow_runs (name, id)",
    """
    CREATE INDEX workflow_runs_tenant_idx ON workflow_runs (tenant, id)
        WHERE tenant IS NOT NULL
    """,
    """
    CREATE INDEX workflow_runs_parent_idx ON workflow_runs (parent_run_id, id)
        WHERE parent_run_id IS NOT NULL
    """,
    """
    CREATE INDEX workflow_runs_correlation_idx ON workflow_runs (correlation_key, id)
        WHERE correlation_key IS NOT NULL
    """,
    # A run's history: one row per primitive call, by seq. Only pending rows ever change.
    """
    CREATE TABLE workflow_steps (
        run_id      TEXT    NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
        seq         INTEGER NOT NULL,
        name        TEXT    NOT NULL,
        kind        TEXT    NOT NULL,  -- step | sleep | event | child | compensation
        state       TEXT    NOT NULL,  -- pending | completed | failed
        started_at  INTEGER NOT NULL,
        finished_at INTEGER,
        output      TEXT,
        error       TEXT,
        attempts    INTEGER NOT NULL,
        wake_at     INTEGER,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID
    """,
    # Events sent to runs. A rowid table: the rowid is the arrival order, which breaks ties
    # between events of one created_at when take_event looks for the oldest.
    """
    CREATE TABLE workflow_events (
        id           TEXT    NOT NULL PRIMARY KEY,
        run_id       TEXT    NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
        name         TEXT    NOT NULL,
        payload      TEXT    NOT NULL,
        created_at   INTEGER NOT NULL,
        tenant       TEXT,
        consumed_seq INTEGER
    )
    """,
    # take_event's lookups (the oldest unconsumed, or the one a seq consumed) and
    # update_run's "has it already arrived" probe.
    """
    CREATE INDEX workflow_events_run_idx ON workflow_events (run_id, name, consumed_seq)
    """,
)

_TENANT_KEYS = (
    # Unique keys are unique within a tenant (jobs without one form a scope of their own),
    # no longer across the store. The key leads, so that a lookup by key alone still seeks;
    # the index stays partial, so jobs without a key cost nothing more.
    # The second column is KEY_SCOPE, spelled out: a released migration never changes.
    """
    CREATE UNIQUE INDEX jobs_unique_key_tenant_idx
        ON jobs (unique_key, coalesce('=' || tenant, '')) WHERE unique_key IS NOT NULL
    """,
    "DROP INDEX jobs_unique_key_idx",
    # Dead-letter entries never replayed, in failure order: "replay the oldest" and their
    # count skip the replayed entries that stay in the queue. Only failures and replays
    # write it.
    "CREATE INDEX dlq_unreplayed_idx ON dlq (id) WHERE replayed_at IS NULL",
)

_WORKER_NAMES = (
    # The job names a worker runs, as a JSON array; NULL: not reported (rows written before
    # this version, or by an older worker). Only worker rows change: no job index is touched.
    "ALTER TABLE workers ADD COLUMN names TEXT",
)

# Columns of the rebuilt jobs table, small ones first: a row whose payload overflows keeps its
# first few hundred bytes on its b-tree page, so whatever precedes the payload is read from
# that page alone; what follows it is reached by walking the payload's overflow pages.
_JOB_COLUMNS_V6 = (
    "id, name, queue, state, priority, attempt, max_attempts, timeout, run_at, created_at, "
    "updated_at, started_at, finished_at, unique_key, tenant, worker_id, attempt_token, "
    "lease_expires_at, last_error, headers, payload, result"
)

_ROWID_JOBS = (
    # Version 1 made jobs a WITHOUT ROWID table: its b-tree is keyed by id and every cell holds
    # the whole row, so each insert or lookup by id compared the id with whole rows on its way
    # down, and a row whose payload overflows is read in full (every overflow page) to be
    # compared. With 20 delayed 10 MB jobs, enqueueing a small job read 20-50 MB and a lookup
    # 20-40 MB. A rowid table is keyed by an integer: a lookup by id reads the small index on
    # id, then one row. The price is that index, a second b-tree each insert writes: one more
    # page per commit of a lone job (about 15% of a bare sqlite3 insert; nothing measurable
    # through the engine). The table is rebuilt, rows copied as they are, indexes made again.
    """
    CREATE TABLE jobs_v6 (
        id               TEXT    NOT NULL PRIMARY KEY,
        name             TEXT    NOT NULL,
        queue            TEXT    NOT NULL,
        state            TEXT    NOT NULL,
        priority         INTEGER NOT NULL,
        attempt          INTEGER NOT NULL DEFAULT 0,
        max_attempts     INTEGER NOT NULL,
        timeout          REAL,
        run_at           INTEGER NOT NULL,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL,
        started_at       INTEGER,
        finished_at      INTEGER,
        unique_key       TEXT,
        tenant           TEXT,
        worker_id        TEXT,
        attempt_token    TEXT,
        lease_expires_at INTEGER,
        last_error       TEXT,
        headers          TEXT,
        payload          TEXT    NOT NULL,
        result           TEXT
    )
    """,
    f"INSERT INTO jobs_v6 ({_JOB_COLUMNS_V6}) SELECT {_JOB_COLUMNS_V6} FROM jobs ORDER BY id",
    "DROP TABLE jobs",  # and its indexes
    "ALTER TABLE jobs_v6 RENAME TO jobs",
    # Claims, next_run_at(), the runnable counts and the stats choose and count jobs from index
    # entries alone: each index holds every column its queries read, state included (SQLite
    # does not count a partial index's WHERE column as covered). Version 1's jobs_claim_idx
    # held (priority, run_at, id): a claim read the table row of every runnable candidate for
    # its state and queue, behind the payload (20 delayed 10 MB jobs: 750 MB per idle claim,
    # under the write lock). The entries get wider by the queue, name and tenant strings: an
    # enqueue, a claim or a finish writes a few more bytes to the same index, no other one.
    """
    CREATE INDEX jobs_claim_idx ON jobs (priority DESC, run_at, id, queue, name, tenant, state)
        WHERE state IN ('pending', 'retrying')
    """,
    # As version 2 made them.
    """
    CREATE INDEX jobs_running_idx ON jobs (queue, tenant, lease_expires_at, worker_id, state)
        WHERE state = 'running'
    """,
    # With the tenant now, so that the stats' per-tenant counts and throughput read it alone.
    """
    CREATE INDEX jobs_finished_idx ON jobs (state, finished_at, queue, tenant)
        WHERE finished_at IS NOT NULL
    """,
    # As version 4 made it.
    """
    CREATE UNIQUE INDEX jobs_unique_key_tenant_idx
        ON jobs (unique_key, coalesce('=' || tenant, '')) WHERE unique_key IS NOT NULL
    """,
)

#: Every migration, by ascending version.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(version=1, name="0001_initial", statements=_INITIAL),
    Migration(version=2, name="0002_cluster_cron_queues", statements=_CLUSTER),
    Migration(version=3, name="0003_workflows", statements=_WORKFLOWS),
    Migration(version=4, name="0004_tenant_unique_keys", statements=_TENANT_KEYS),
    Migration(version=5, name="0005_worker_names", statements=_WORKER_NAMES),
    Migration(version=6, name="0006_rowid_jobs", statements=_ROWID_JOBS),
)
