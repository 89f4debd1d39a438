"""Serving dispatch-admin (the admin API and the dashboard) from a Flask app.

Flask speaks WSGI and the admin app ASGI, so the admin app is wrapped by a2wsgi, which runs
it on an event loop of its own in a background thread, and mounted beside the Flask app under
a URL prefix by Werkzeug's dispatcher. Flask's views, error handlers and before-request hooks
never see those requests: the admin app authenticates them itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

from flask import Flask

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from dispatch_core import Engine
    from dispatch_plugins.admin import Token

__all__ = ["DEFAULT_PREFIX", "mount_admin"]

#: Where the admin app is mounted unless told otherwise: its API is then ``/dispatch/v1``.
DEFAULT_PREFIX = "/dispatch"


def mount_admin(
    app: Flask,
    engine: Engine,
    *,
    prefix: str = DEFAULT_PREFIX,
    tokens: Sequence[Token] | None = None,
    dashboard: bool = True,
) -> None:
    """Serve the admin API and dashboard of ``engine`` under ``prefix`` of ``app``.

    Args:
        app: The Flask app.
        engine: The engine to operate (the app's, from the extension).
        prefix: The mount point, e.g. ``/dispatch`` (the API is then ``/dispatch/v1``).
        tokens: The bearer tokens; ``None`` reads ``DISPATCH_ADMIN_TOKENS``.
        dashboard: Serve the dashboard too, not only the API.

    Raises:
        ImportError: dispatch-admin or a2wsgi is not installed (``pip install
            dispatch-flask[admin]``).
        ValueError: ``prefix`` is not a path like ``/dispatch``.
    """
    if not prefix.startswith("/") or prefix.endswith("/") or "//" in prefix:
        raise ValueError(f"prefix must look like /dispatch (no trailing slash), not {prefix!r}")
    try:
        from a2wsgi import ASGIMiddleware
        from werkzeug.middleware.dispatcher import DispatcherMiddleware

        from dispatch_plugins.admin import admin_app
    except ImportError as exc:
        raise ImportError(
            f"serving the Dispatch admin app from Flask needs {exc.name or 'dispatch-admin'}: "
            "pip install 'dispatch-flask[admin]'"
        ) from exc
    asgi = admin_app(engine, tokens=tokens, dashboard=dashboard)
    wsgi = _Lazy(lambda: cast("WSGIApplication", ASGIMiddleware(cast(Any, asgi))))
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {prefix: wsgi})  # type: ignore[method-assign]


class _Lazy:
    """A WSGI app built on its first request: a2wsgi starts an event-loop thread when it is
    made, and an app that never serves the admin API (a test, a worker) should not pay it."""

    def __init__(self, make: Callable[[], WSGIApplication]) -> None:
        self._make = make
        self._app: WSGIApplication | None = None
        self._lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    self._app = self._make()
        return _Drained(self._app(environ, start_response))


class _Drained:
    """A response body that is read to its end when closed.

    a2wsgi's task for a request finishes only once the body iterator is advanced past its
    last chunk; a caller that stops at the Content-Length (Werkzeug's test client does) would
    leave the task pending until the garbage collector destroys it with a warning. The admin
    app's bodies are finite, so reading the rest is cheap.
    """

    def __init__(self, body: Iterable[bytes]) -> None:
        self._body = body
        self._chunks = iter(body)

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        try:
            for _ in self._chunks:
                pass
        finally:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
