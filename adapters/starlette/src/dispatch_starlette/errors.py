"""The errors the Starlette adapter raises."""

from __future__ import annotations

from dispatch_core import ConfigurationError

__all__ = ["LifespanNotInstalledError"]


class LifespanNotInstalledError(ConfigurationError, RuntimeError):
    """A request asked for the engine, but no Dispatch lifespan put one on the app.

    Either the app was built without ``lifespan=dispatch_lifespan(engine)``, or its lifespan
    has not run (in tests: use ``with TestClient(app) as client:``, which runs it).
    """
