"""The LISTEN side of wake-ups: a dedicated connection that calls ``wake()`` per notification.

Every write that makes jobs claimable (enqueue, retry, replay, rescue, a retried or released
outcome) calls ``pg_notify('dispatch_<schema>', '')`` in its own transaction, so PostgreSQL
delivers the notification when, and only if, that transaction commits. The listener holds one
connection outside the pool (a pooled connection would be handed to other work), runs
``LISTEN`` on it and waits in ``conn.notifies()``.

When the connection is lost (server restart, network failure) it logs, reconnects, listens
again and calls ``wake()`` once: notifications sent while it was away are lost, so the worker
should look for work. Reconnection attempts start 50 ms apart and back off to at most
:data:`_MAX_RETRY` (a refused connection costs next to nothing), so the listener is back
within a quarter of a second of the server accepting connections. An idle connection is
probed every ``probe_interval`` seconds, so that a silently dropped connection is noticed too;
the probe waits at most the store's ``call_timeout`` for its answer (a server that hangs
answers nothing, and its kernel still acknowledges every packet).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import psycopg

from dispatch_core.errors import StoreUnavailableError
from dispatch_plugins.postgres.connection import AsyncDeadline, connect_async
from dispatch_plugins.postgres.url import PostgresURL

__all__ = ["Listener"]

log = logging.getLogger("dispatch_plugins.postgres.listener")

_FIRST_RETRY = 0.05
#: The longest wait between two reconnection attempts.
_MAX_RETRY = 0.25


class Listener:
    """Calls ``wake()`` whenever a notification arrives on the store's channel.

    Args:
        config: The store's parsed URL (connection parameters and channel).
        wake: Called on the event loop's thread, once per notification and once after each
            reconnection.
        probe_interval: Seconds without notifications after which the connection is probed.
    """

    def __init__(
        self, config: PostgresURL, wake: Callable[[], None], *, probe_interval: float = 10.0
    ) -> None:
        self.config = config
        self.wake = wake
        self.probe_interval = probe_interval
        #: How many times the connection was lost and re-established.
        self.reconnects = 0
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        """Whether the listener has a live, listening connection right now."""
        return self._conn is not None and not self._conn.closed

    async def start(self) -> None:
        """Connect and ``LISTEN``, then wait for notifications in a task.

        Raises:
            StoreUnavailableError: the first connection cannot be made.
        """
        self._conn = await self._connect()
        self._task = asyncio.create_task(
            self._run(), name=f"dispatch-postgres listener {self.config.channel}"
        )

    async def stop(self) -> None:
        """Stop waiting and close the connection. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await connect_async(self.config)
        try:
            await conn.execute(f'LISTEN "{self.config.channel}"')
        except psycopg.Error as exc:
            await conn.close()
            raise StoreUnavailableError(
                f"cannot LISTEN on PostgreSQL at {self.config.display}: {exc}"
            ) from None
        return conn

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except (psycopg.Error, OSError) as exc:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                log.warning(
                    "LISTEN connection to PostgreSQL at %s lost (%s); reconnecting",
                    self.config.display,
                    self.config.scrub(reason),
                )
            await self._close()
            await self._reconnect()
            self.reconnects += 1
            log.info("LISTEN connection to PostgreSQL at %s re-established", self.config.display)
            self.wake()  # whatever was notified while we were away is lost: look for work

    async def _listen(self) -> None:
        conn = self._conn
        assert conn is not None
        guard = AsyncDeadline(conn, self.config.call_timeout)
        while True:
            async for _ in conn.notifies(timeout=self.probe_interval):
                self.wake()
            guard.kick()
            try:
                await conn.execute("SELECT 1")  # quiet for a while: is the connection alive?
            except psycopg.Error as exc:
                if guard.expired:
                    raise psycopg.OperationalError(
                        f"no answer to a probe within {self.config.call_timeout:g}s (call_timeout)"
                    ) from exc
                raise
            finally:
                guard.stop()

    async def _reconnect(self) -> None:
        delay = _FIRST_RETRY
        while True:
            await asyncio.sleep(delay)
            try:
                self._conn = await self._connect()
                return
            except StoreUnavailableError as exc:
                log.debug("LISTEN reconnection failed (%s); retrying in %.2fs", exc, delay)
                delay = min(delay * 2, _MAX_RETRY)
