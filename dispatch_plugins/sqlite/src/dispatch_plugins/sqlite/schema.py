"""The versioned schema: every migration, in order. Never edit a released one; append.

Times are INTEGER microseconds since the epoch (UTC); payload, headers and result are JSON
text (headers and result are NULL when empty).
"""

from __future__ import annotations

import attrs

__all__ = ["Migration", "MIGRATIONS", "MIGRATIONS_TABLE"]

#: Bookkeeping table: one row per applied migration.
MIGRATIONS_TABLE = "dispatch_migrations"


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

#: Every migration, by ascending version.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(version=1, name="0001_initial", statements=_INITIAL),
)
