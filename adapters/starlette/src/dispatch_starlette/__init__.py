"""Starlette and FastAPI integration for Dispatch: a lifespan that opens the engine and can run a
worker in the app process, and a FastAPI dependency.

Example::

    from dispatch_starlette import dispatch_lifespan, get_dispatch

    app = Starlette(routes=routes, lifespan=dispatch_lifespan(engine, run_worker=True))

Apps mounted under this one (the admin API, for one) find the engine with
:func:`get_dispatch`, through the lifespan state every request carries.
"""

from __future__ import annotations

from dispatch_starlette.dependencies import get_dispatch
from dispatch_starlette.errors import LifespanNotInstalledError
from dispatch_starlette.lifespan import DEFAULT_GRACE_PERIOD, STATE_KEY, dispatch_lifespan

__all__ = [
    "dispatch_lifespan",
    "get_dispatch",
    "LifespanNotInstalledError",
    "STATE_KEY",
    "DEFAULT_GRACE_PERIOD",
]
