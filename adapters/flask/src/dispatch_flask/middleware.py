"""The job middleware that runs every job inside its Flask app's application context."""

from __future__ import annotations

import weakref
from typing import Any

from flask import Flask

from dispatch_core import CallNext, JobContext, Middleware
from dispatch_core.middleware import TIMEOUT, USER

__all__ = ["APP_CONTEXT_MIDDLEWARE", "APP_CONTEXT_ORDER", "app_context_middleware"]

#: The middleware's name in ``engine.middleware``.
APP_CONTEXT_MIDDLEWARE = "flask.app_context"
#: Its place in the chain: inside the built-ins (which stay fused into one frame), outside
#: the user's middleware, so those see ``current_app`` too.
APP_CONTEXT_ORDER = (TIMEOUT + USER) // 2


def app_context_middleware(app: Flask) -> Middleware:
    """A middleware that pushes a fresh ``app.app_context()`` around each job.

    Inside a job, ``current_app`` is ``app`` and ``flask.g`` is the job's own; teardown
    functions (``app.teardown_appcontext``) run when the job ends. A sync handler runs in a
    thread with a copy of the job's context variables, so it sees the same context.

    The app is held weakly: the engine lives in the extension's per-app state, which must
    not keep the app alive.
    """
    app_ref = weakref.ref(app)

    async def flask_app_context(ctx: JobContext, call_next: CallNext) -> Any:
        current = app_ref()
        if current is None:  # the app was garbage-collected: nothing to push
            return await call_next(ctx)
        with current.app_context():
            return await call_next(ctx)

    return flask_app_context
