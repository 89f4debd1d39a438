"""Cross-process change detection: poll ``PRAGMA data_version`` on a connection of its own.

SQLite has no notifications, but ``PRAGMA data_version`` changes whenever *another* connection
(in this process or any other) commits to the database. Reading it is a look at the shared WAL
index -- a few microseconds, no disk I/O -- so polling it every millisecond is cheap enough to
give workers near-instant wake-ups without polling the jobs table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable

from dispatch_plugins.sqlite.connection import connect

__all__ = ["DataVersionWatcher"]

_log = logging.getLogger(__name__)

#: How long the watcher keeps its fast rate after the last change it saw.
_HOT_SECONDS = 1.0


class DataVersionWatcher:
    """Calls ``wake()`` when the database changes; runs as an asyncio task until stopped.

    Args:
        path: The database file.
        wake: Called (in the event loop's thread) after each change seen.
        interval: Seconds between two reads of ``PRAGMA data_version`` while the database is
            busy (a change was seen in the last second).
        idle_interval: The longest gap between two reads once the database has been quiet
            for a second; ``None`` or anything below ``interval`` means always ``interval``.
    """

    def __init__(
        self,
        path: str,
        wake: Callable[[], None],
        *,
        interval: float,
        idle_interval: float | None = None,
    ) -> None:
        self._path = path
        self._wake = wake
        self._interval = interval
        self._idle_interval = max(interval, idle_interval or interval)
        self._conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, busy_timeout_ms: int) -> None:
        """Open the watcher's connection (in a thread, so the loop never blocks) and start polling.

        Raises:
            StoreUnavailableError: the database cannot be opened.
        """
        conn = await asyncio.to_thread(
            connect, self._path, busy_timeout_ms=busy_timeout_ms, check_same_thread=False
        )
        # From now on a read that would wait is skipped and tried again on the next tick, so
        # the event loop never blocks on another connection's lock.
        conn.execute("PRAGMA busy_timeout = 0")
        self._conn = conn
        self._task = asyncio.get_running_loop().create_task(
            self._run(conn), name=f"dispatch-sqlite watcher {self._path}"
        )

    async def stop(self) -> None:
        """Stop polling and close the connection. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def _run(self, conn: sqlite3.Connection) -> None:
        pragma = "PRAGMA data_version"
        fast, slow = self._interval, self._idle_interval
        # Poll at the fast rate for about a second after the last change, then back off
        # geometrically to the idle rate: each wake-up of an idle process costs tens of
        # microseconds of CPU, whatever the poll does.
        hot_polls = max(int(_HOT_SECONDS / fast), 1)
        interval, quiet = fast, 0
        sleep = asyncio.sleep
        last = conn.execute(pragma).fetchone()[0]
        while True:
            await sleep(interval)
            try:
                version = conn.execute(pragma).fetchone()[0]
            except sqlite3.OperationalError as exc:  # e.g. busy during WAL recovery
                _log.debug("data_version read failed, retrying: %s", exc)
                continue
            if version != last:
                last = version
                interval, quiet = fast, 0
                self.wake()
            elif interval < slow:
                quiet += 1
                if quiet >= hot_polls:
                    interval = min(interval * 2, slow)

    def wake(self) -> None:
        """Call the wake callback now (also used for this process's own writes)."""
        try:
            self._wake()
        except Exception:  # a faulty callback must not stop the watcher
            _log.exception("wake callback of the SQLite change watcher failed")
