"""dispatch-postgres: a durable Dispatch store in a PostgreSQL schema.

Use it with a ``postgresql://`` (or ``postgres://``) URL, e.g.
``postgresql://app:secret@db.internal:5432/app?schema=dispatch``; the plugin registers both
schemes through the ``dispatch_core.plugins`` entry point.
"""

from __future__ import annotations

from dispatch_plugins.postgres.connection import (
    PostgresLimitError,
    PostgresTimeoutError,
    WrongConnectionError,
)
from dispatch_plugins.postgres.store import PostgresStore
from dispatch_plugins.postgres.sync import PostgresSyncStore
from dispatch_plugins.postgres.url import PostgresURL, parse_url

__all__ = [
    "PostgresLimitError",
    "PostgresStore",
    "PostgresSyncStore",
    "PostgresTimeoutError",
    "PostgresURL",
    "WrongConnectionError",
    "parse_url",
]
