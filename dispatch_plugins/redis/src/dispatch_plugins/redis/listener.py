"""The subscribe side of wake-ups: a dedicated connection that calls ``wake()`` on messages.

Every script that makes jobs runnable (enqueue, a retried or released outcome, rescue, manual
retry, replay, cron fire, workflow drivers, a queue resumed or loosened) ends with
``PUBLISH <prefix>:wake``. The listener holds one pub/sub connection of its own, subscribed to
that channel, and calls ``wake()`` once per burst of messages.

When the connection is lost (server restart, network failure) it logs, reconnects with capped
exponential backoff, subscribes again and calls ``wake()`` once, since messages published
meanwhile are lost. An idle connection is pinged every ``probe_interval`` seconds, so that a
silently dropped one is noticed too. Delayed jobs need no message: the worker sleeps until the
next due time the store reports (``next_run_at``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio as aredis
from dispatch_plugins.redis.client import keep_cancellation, make_async_client, unavailable
from dispatch_plugins.redis.url import RedisURL

__all__ = ["Listener"]

log = logging.getLogger("dispatch_plugins.redis.listener")

_FIRST_RETRY = 0.05
_MAX_RETRY = 5.0


class Listener:
    """Calls ``wake()`` whenever a message arrives on the store's wake-up channel.

    Args:
        config: The store's parsed URL.
        wake: Called on the event loop's thread, once per burst of messages and once after
            each reconnection.
        probe_interval: Seconds without messages after which the connection is pinged.
    """

    def __init__(
        self, config: RedisURL, wake: Callable[[], None], *, probe_interval: float = 10.0
    ) -> None:
        self.config = config
        self.wake = wake
        self.probe_interval = probe_interval
        #: How many times the connection was lost and re-established.
        self.reconnects = 0
        self._client: aredis.Redis | None = None
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        """Whether the listener has a subscribed connection right now."""
        return self._pubsub is not None and bool(self._pubsub.subscribed)

    async def start(self) -> None:
        """Subscribe, then wait for messages in a task.

        Raises:
            StoreUnavailableError: the first connection cannot be made.
        """
        await self._connect()
        self._task = asyncio.create_task(
            self._run(), name=f"dispatch-redis listener {self.config.channel}"
        )

    async def stop(self) -> None:
        """Stop waiting and close the connection. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close()

    async def _connect(self) -> None:
        client = make_async_client(self.config)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.config.channel)
        except (redis.RedisError, OSError) as exc:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
                await client.aclose()
            raise unavailable(self.config, exc) from exc
        self._client, self._pubsub = client, pubsub

    async def _close(self) -> None:
        pubsub, client = self._pubsub, self._client
        self._pubsub = self._client = None
        with contextlib.suppress(Exception):
            if pubsub is not None:
                await pubsub.aclose()
        with contextlib.suppress(Exception):
            if client is not None:
                await client.aclose()

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except (redis.RedisError, OSError) as exc:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                log.warning(
                    "pub/sub connection to Redis at %s lost (%s); reconnecting",
                    self.config.display,
                    self.config.scrub(reason),
                )
            await self._close()
            await self._reconnect()
            self.reconnects += 1
            log.info("pub/sub connection to Redis at %s re-established", self.config.display)
            self.wake()  # whatever was published while we were away is lost: look for work

    async def _listen(self) -> None:
        pubsub = self._pubsub
        assert pubsub is not None
        quiet_since = time.monotonic()
        while True:
            msg = await keep_cancellation(pubsub.get_message(timeout=self.probe_interval))
            if msg is None:
                if time.monotonic() - quiet_since >= self.probe_interval:
                    # quiet for a while: is the connection alive?
                    await keep_cancellation(pubsub.ping())
                    quiet_since = time.monotonic()
                continue
            # Take whatever else is already buffered, then wake once for the burst.
            while await keep_cancellation(pubsub.get_message(timeout=0.0)) is not None:
                pass
            quiet_since = time.monotonic()
            self.wake()

    async def _reconnect(self) -> None:
        delay = _FIRST_RETRY
        while True:
            await asyncio.sleep(delay)
            try:
                await self._connect()
                return
            except Exception as exc:
                log.debug("pub/sub reconnection failed (%s); retrying in %.2fs", exc, delay)
                delay = min(delay * 2, _MAX_RETRY)
