"""Clients, script calls, and the translation of driver errors into Dispatch's."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis
import redis.asyncio as aredis
from dispatch_core.errors import StoreUnavailableError
from dispatch_plugins.redis.lua import SCRIPTS, SHAS
from dispatch_plugins.redis.url import RedisURL
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

__all__ = [
    "make_async_client",
    "make_sync_client",
    "aeval",
    "seval",
    "is_unavailable",
    "unavailable",
    "MIN_SERVER",
    "keep_cancellation",
]

T = TypeVar("T")

#: ZINTERCARD (counts) needs Redis 7.0.
MIN_SERVER = (7, 0)


def _kwargs(config: RedisURL) -> dict[str, Any]:
    return {**config.kwargs, "decode_responses": True}


# No retries inside the driver: a write whose reply was lost may have been applied, and the
# store decides what may run again (see RedisStore._call). Each client takes the Retry of its
# own kind: redis-py 8.2 warns when an asyncio client is given the blocking one.


def make_async_client(config: RedisURL) -> aredis.Redis:
    """A ``redis.asyncio`` client for ``config``, decoding replies, with no retries."""
    return aredis.Redis(**_kwargs(config), retry=AsyncRetry(NoBackoff(), 0))


def make_sync_client(config: RedisURL) -> redis.Redis:
    """A blocking client for ``config``, decoding replies, with no retries."""
    return redis.Redis(**_kwargs(config), retry=Retry(NoBackoff(), 0))


async def aeval(client: aredis.Redis, name: str, args: list[Any]) -> Any:
    """Run the script ``name`` by its SHA, loading it first if the server lacks it (a new or
    restarted server, or ``SCRIPT FLUSH``)."""
    try:
        return await client.evalsha(SHAS[name], 0, *args)
    except NoScriptError:
        await client.script_load(SCRIPTS[name])
        return await client.evalsha(SHAS[name], 0, *args)


def seval(client: redis.Redis, name: str, args: list[Any]) -> Any:
    """The blocking twin of :func:`aeval`."""
    try:
        return client.evalsha(SHAS[name], 0, *args)
    except NoScriptError:
        client.script_load(SCRIPTS[name])
        return client.evalsha(SHAS[name], 0, *args)


async def keep_cancellation(aw: Awaitable[T]) -> T:
    """Await ``aw`` (a ``redis.asyncio`` call), re-raising a cancellation it swallowed.

    ``redis.asyncio`` can lose a ``Task.cancel()`` that lands while a command waits for its
    reply (redis-py issues #2028, #2551): the command returns, or fails with a connection
    error, and the task runs on, so a worker's background task ignores its shutdown. Python
    counts cancellation requests (``Task.cancelling()``): one made during the call that did
    not end it is raised here.
    """
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    try:
        result = await aw
    except Exception:
        if task is not None and task.cancelling() > before:
            raise asyncio.CancelledError from None
        raise
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError
    return result


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the server cannot be used right now (down, unreachable, loading
    its data, read-only replica, out of memory) rather than a bug."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError)):
        return True
    if isinstance(exc, redis.ResponseError):
        msg = str(exc)
        return msg.startswith(("OOM", "READONLY", "LOADING", "MASTERDOWN", "BUSY", "NOAUTH"))
    return isinstance(exc, redis.AuthenticationError)


def unavailable(config: RedisURL, exc: BaseException) -> StoreUnavailableError:
    """The :class:`StoreUnavailableError` for ``exc``, naming the server, never the
    password."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return StoreUnavailableError(f"cannot use Redis at {config.display}: {config.scrub(reason)}")
