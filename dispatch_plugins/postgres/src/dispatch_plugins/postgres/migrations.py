"""Apply the schema migrations of :mod:`dispatch_plugins.postgres.schema`.

A database that is already current is recognised with two reads and no lock. Otherwise the
migration runs in one transaction that first takes a transaction-scoped advisory lock
(``pg_advisory_xact_lock``) keyed on the schema name, so that processes migrating at once
serialise: the next one finds everything applied and does nothing. PostgreSQL's DDL is
transactional, so a failed migration leaves nothing behind.
"""

from __future__ import annotations

import hashlib

from dispatch_core.errors import StoreUnavailableError
from dispatch_plugins.postgres.ops.common import TRANSACTION, Steps, Stmt
from dispatch_plugins.postgres.schema import MIGRATIONS, MIGRATIONS_TABLE, Migration

__all__ = ["migrate", "applied_versions", "lock_key", "LATEST_VERSION"]

#: The schema version this package writes.
LATEST_VERSION = MIGRATIONS[-1].version


def lock_key(schema: str) -> int:
    """The advisory lock key (a signed 64-bit integer) guarding migrations of ``schema``."""
    digest = hashlib.sha256(f"dispatch-postgres migrate {schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def applied_versions(schema: str) -> Steps[set[int]]:
    """The migration versions recorded in ``schema`` (empty when it has no Dispatch tables)."""
    table = f'"{schema}".{MIGRATIONS_TABLE}'
    rows = yield Stmt("SELECT to_regclass(%s) IS NOT NULL", (table,), rows=True)
    if not rows[0][0]:
        return set()
    rows = yield Stmt(f"SELECT version FROM {table}", rows=True)
    return {version for (version,) in rows}


def migrate(
    schema: str, where: str, migrations: tuple[Migration, ...] = MIGRATIONS
) -> Steps[list[str]]:
    """Apply every migration ``schema`` lacks, in order, in one transaction.

    Args:
        schema: The schema to create or upgrade (a plain lowercase identifier).
        where: ``user@host:port/dbname``, for error messages.
        migrations: The migrations to bring the schema to (the default is this package's).

    Returns:
        The names of the migrations applied; empty when the schema was already current.

    Raises:
        StoreUnavailableError: the schema was written by a newer dispatch-postgres.
    """
    known = {m.version for m in migrations}
    if _check((yield from applied_versions(schema)), known, schema, where):
        return []  # current: no lock, no write
    quoted = f'"{schema}"'
    table = f"{quoted}.{MIGRATIONS_TABLE}"
    yield TRANSACTION
    # Waits for another process's migration; the DDL below may build indexes on a big table:
    # neither is bounded by the store's timeouts.
    yield Stmt("SELECT pg_advisory_xact_lock(%s)", (lock_key(schema),), unbounded=True)
    exists = yield Stmt("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,), rows=True)
    if not exists:  # IF NOT EXISTS would still need the CREATE privilege on the database
        yield Stmt(f"CREATE SCHEMA {quoted}")
    yield Stmt(
        f"CREATE TABLE IF NOT EXISTS {table} (\n"
        "    version    integer     NOT NULL PRIMARY KEY,\n"
        "    name       text        NOT NULL,\n"
        "    applied_at timestamptz NOT NULL DEFAULT now()\n"
        ")"
    )
    # Again, under the lock: another process may have migrated meanwhile.
    done = {version for (version,) in (yield Stmt(f"SELECT version FROM {table}", rows=True))}
    _check(done, known, schema, where)
    applied: list[str] = []
    for migration in migrations:
        if migration.version in done:
            continue
        for statement in migration.sql(quoted):
            yield Stmt(statement, unbounded=True)
        yield Stmt(
            f"INSERT INTO {table} (version, name) VALUES (%s, %s)",
            (migration.version, migration.name),
        )
        applied.append(migration.name)
    return applied


def _check(done: set[int], known: set[int], schema: str, where: str) -> bool:
    """Whether ``done`` already covers ``known``; raise if the schema is from the future."""
    unknown = sorted(done - known)
    if unknown:
        raise StoreUnavailableError(
            f"PostgreSQL schema {schema!r} at {where} has schema version(s) {unknown} that this "
            f"dispatch-postgres does not know (it knows up to {max(known)}); "
            "upgrade dispatch-postgres"
        )
    return known <= done
