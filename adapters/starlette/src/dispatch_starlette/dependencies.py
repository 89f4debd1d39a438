"""Finding the engine from a request: :func:`get_dispatch`, a FastAPI dependency."""

from __future__ import annotations

# A runtime import, not a TYPE_CHECKING one: FastAPI reads the annotation to know that this
# dependency takes the connection.
from starlette.requests import HTTPConnection

from dispatch_core import Engine
from dispatch_starlette.errors import LifespanNotInstalledError
from dispatch_starlette.lifespan import STATE_KEY

__all__ = ["get_dispatch"]


def get_dispatch(conn: HTTPConnection) -> Engine:
    """The engine the Dispatch lifespan opened, for the app serving this request.

    Use it as a FastAPI dependency (``engine: Annotated[Engine, Depends(get_dispatch)]``) or
    call it from a Starlette endpoint (``get_dispatch(request)``). It reads the lifespan state
    (``request.state.dispatch``), which also reaches apps mounted under the main one, and falls
    back to ``app.state.dispatch``. It works for WebSocket connections too.

    Args:
        conn: The request (or WebSocket).

    Returns:
        The application's :class:`~dispatch_core.Engine`.

    Raises:
        LifespanNotInstalledError: no Dispatch lifespan ran for this app; the message says how
            to install it.
    """
    found = getattr(conn.state, STATE_KEY, None)
    where = "request.state.dispatch"
    if found is None:
        app = conn.scope.get("app")
        app_state = getattr(app, "state", None)
        found = getattr(app_state, STATE_KEY, None)
        where = "app.state.dispatch"
    if found is None:
        raise LifespanNotInstalledError(
            f"no Dispatch engine for {_describe(conn)}: the app has no Dispatch lifespan, or "
            "it has not run. Build the app with lifespan=dispatch_lifespan(engine) "
            "(Starlette(...) or FastAPI(...)); in tests, enter the client as a context manager "
            "(`with TestClient(app) as client:`) so the lifespan runs."
        )
    if not isinstance(found, Engine):
        raise LifespanNotInstalledError(
            f"{where} is a {type(found).__name__}, not a dispatch_core.Engine "
            f"({_describe(conn)}); another lifespan or middleware uses the {STATE_KEY!r} key"
        )
    return found


def _describe(conn: HTTPConnection) -> str:
    method = conn.scope.get("method")
    return f"{method} {conn.url.path}" if method else f"{conn.scope['type']} {conn.url.path}"
