"""The Dispatch lifespan: open the engine with the app, optionally run a worker inside it.

Starlette 1.0 has no ``on_startup``/``on_shutdown``; a lifespan is the one place where an app
opens and closes what it holds. :func:`dispatch_lifespan` builds one:

- on startup it opens the engine's async store (a store that cannot be opened fails the
  startup), sets ``app.state.dispatch``, enters the user's own lifespan if one is given, and
  starts an in-process worker if asked;
- it yields the lifespan state ``{"dispatch": engine}`` merged with the user's, which every
  request sees as ``request.state`` (apps mounted under this one included: that is how a
  mounted admin app finds the engine);
- on shutdown it stops the worker gracefully, exits the user's lifespan and closes the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar, overload

from starlette.applications import Starlette

from dispatch_core import ConfigurationError, Engine, StoreUnavailableError
from dispatch_starlette._worker_task import WorkerTask

__all__ = ["dispatch_lifespan", "STATE_KEY", "DEFAULT_GRACE_PERIOD"]

log = logging.getLogger("dispatch_starlette")

#: The key of the engine in the lifespan state and on ``app.state``.
STATE_KEY = "dispatch"

#: Seconds an in-process worker gives running jobs at shutdown unless ``worker_options`` says
#: otherwise. Shorter than a standalone worker's 30 s: a web process is usually given about
#: 30 s to stop in all (Kubernetes' default), HTTP draining included.
DEFAULT_GRACE_PERIOD = 10.0

AppT = TypeVar("AppT", bound=Starlette)
#: What a user lifespan yields: a state mapping, or nothing.
UserState = Mapping[str, Any] | None


@overload
def dispatch_lifespan(
    engine: Engine,
    *,
    run_worker: bool = False,
    worker_options: Mapping[str, Any] | None = None,
    lifespan: None = None,
) -> Callable[[Starlette], AbstractAsyncContextManager[dict[str, Any]]]: ...


@overload
def dispatch_lifespan(
    engine: Engine,
    *,
    run_worker: bool = False,
    worker_options: Mapping[str, Any] | None = None,
    lifespan: Callable[[AppT], AbstractAsyncContextManager[UserState]],
) -> Callable[[AppT], AbstractAsyncContextManager[dict[str, Any]]]: ...


def dispatch_lifespan(
    engine: Engine,
    *,
    run_worker: bool = False,
    worker_options: Mapping[str, Any] | None = None,
    lifespan: Callable[[Any], AbstractAsyncContextManager[UserState]] | None = None,
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan for ``Starlette(lifespan=...)`` or ``FastAPI(lifespan=...)`` that opens
    ``engine`` for the app's lifetime.

    Example::

        app = Starlette(routes=routes, lifespan=dispatch_lifespan(engine, run_worker=True))

    Args:
        engine: The application's engine.
        run_worker: Also run a :class:`~dispatch_core.Worker` in the app's event loop. It
            installs no signal handlers (the server owns them) and is stopped gracefully when
            the app shuts down.
        worker_options: Keyword arguments for the worker (``queues``, ``concurrency``,
            ``grace_period``...; see :class:`~dispatch_core.Worker`). ``grace_period``
            defaults to :data:`DEFAULT_GRACE_PERIOD` here. Needs ``run_worker=True``.
        lifespan: Your own lifespan, run inside this one: it starts after the engine is open
            (so it may enqueue) and before the worker, and ends after the worker stopped. The
            state it yields is merged into the lifespan state.

    Returns:
        The lifespan function. Its state is ``{"dispatch": engine}`` plus your lifespan's.

    Raises:
        TypeError: ``engine`` is not an Engine, or ``worker_options`` holds an argument the
            worker does not take.
        ConfigurationError: ``worker_options`` without ``run_worker=True``, or a worker
            option with an impossible value.
    """
    if not isinstance(engine, Engine):
        raise TypeError(
            f"dispatch_lifespan() needs a dispatch_core.Engine, got {type(engine).__name__}"
        )
    options = _worker_options(engine, run_worker, worker_options)

    @contextlib.asynccontextmanager
    async def lifespan_context(app: Any) -> AsyncIterator[dict[str, Any]]:
        await _open(engine)
        setattr(app.state, STATE_KEY, engine)
        try:
            async with contextlib.AsyncExitStack() as stack:
                state: dict[str, Any] = {}
                if lifespan is not None:
                    state.update(_user_state(await stack.enter_async_context(lifespan(app))))
                state[STATE_KEY] = engine
                if options is not None:
                    worker = WorkerTask(engine.worker(**options))
                    # Registered last, so it stops first: before the user's lifespan ends.
                    stack.push_async_callback(worker.stop)
                    worker.start()
                yield state
        finally:
            if getattr(app.state, STATE_KEY, None) is engine:
                delattr(app.state, STATE_KEY)
            await engine.aclose()
            # Blocking resources of sync enqueues made from sync endpoints (thread pool).
            await asyncio.to_thread(engine.close)

    return lifespan_context


def _worker_options(
    engine: Engine, run_worker: bool, worker_options: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The worker's arguments, checked now so a mistake fails at import, not at startup."""
    if not run_worker:
        if worker_options:
            raise ConfigurationError(
                "dispatch_lifespan(worker_options=...) needs run_worker=True; without it no "
                "worker runs in the app and the options would be ignored"
            )
        return None
    options = {"grace_period": DEFAULT_GRACE_PERIOD, **(worker_options or {})}
    try:
        engine.worker(**options)  # builds nothing that needs a loop: a dry run of the checks
    except TypeError as exc:
        raise TypeError(f"dispatch_lifespan(worker_options=...): {exc}") from exc
    except ConfigurationError as exc:
        raise ConfigurationError(f"dispatch_lifespan(worker_options=...): {exc}") from exc
    return options


async def _open(engine: Engine) -> None:
    try:
        await engine.aopen()
    except StoreUnavailableError as exc:
        # The server reports this and exits; the store's own message says which and why.
        raise StoreUnavailableError(
            f"app startup failed: Dispatch cannot open its store: {exc}"
        ) from exc


def _user_state(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(
            "the lifespan given to dispatch_lifespan(lifespan=...) must yield a mapping (its "
            f"state) or nothing, not a {type(value).__name__}"
        )
    if STATE_KEY in value:
        raise ConfigurationError(
            f"the lifespan given to dispatch_lifespan(lifespan=...) yields a {STATE_KEY!r} key, "
            "which Dispatch's own lifespan state uses for the engine; rename it"
        )
    return dict(value)
