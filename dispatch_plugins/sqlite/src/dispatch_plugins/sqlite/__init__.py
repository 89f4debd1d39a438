"""dispatch-sqlite: a durable Dispatch store in one SQLite file.

Use it with a ``sqlite://`` URL (``sqlite:///jobs.db``, ``sqlite:////var/lib/app/jobs.db``);
the plugin registers the scheme through the ``dispatch_core.plugins`` entry point.
"""

from __future__ import annotations

from dispatch_plugins.sqlite.store import SQLiteStore
from dispatch_plugins.sqlite.sync import SQLiteSyncStore

__all__ = ["SQLiteStore", "SQLiteSyncStore"]
