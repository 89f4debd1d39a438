"""The versioned schema: every migration, in order. Never edit a released one; append.

Each statement is a template: ``{s}`` stands for the store's schema, already quoted. Times are
``timestamptz``; payload, headers and result are ``jsonb`` (headers and result are NULL when
empty); ids are ``text COLLATE "C"`` so that they sort byte-wise, as Python sorts them.
"""

from __future__ import annotations

import attrs

__all__ = ["Migration", "MIGRATIONS", "MIGRATIONS_TABLE", "RUNNABLE"]

#: Bookkeeping table (in the store's schema): one row per applied migration.
MIGRATIONS_TABLE = "dispatch_migrations"

#: The runnable states, as SQL; must match the partial indexes' WHERE for the planner to use
#: them.
RUNNABLE = "state IN ('pending', 'retrying')"


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

#: Every migration, by ascending version.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(version=1, name="0001_initial", statements=_INITIAL),
)
