"""``admin_app``: the admin API (under ``/v1``) and the dashboard (at ``/``) as one ASGI app.

Mount it where it should live; ``/dispatch`` is the convention (``dispatch serve`` uses it)::

    app = Starlette(routes=[Mount("/dispatch", app=admin_app(engine, tokens=tokens))])

Every request under ``/v1`` but the health probes and the OpenAPI document needs a bearer
token (401 otherwise); each route then checks the token's scopes and tenant (403).

Every response carries ``X-Content-Type-Options: nosniff``; those of the API (errors and 500s
included) also ``Cache-Control: no-store``, as they hold jobs' data and must not linger in a
browser's or a proxy's cache. The dashboard's files keep their own caching.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dispatch_core import Engine
from dispatch_plugins.admin.auth import Authenticator, Token, load_tokens
from dispatch_plugins.admin.dashboard import dashboard_routes
from dispatch_plugins.admin.errors import ApiError, error_response, exception_handlers
from dispatch_plugins.admin.hookspecs import add_hookspecs
from dispatch_plugins.admin.routes import PUBLIC_PATHS, api_routes
from dispatch_plugins.admin.routes._base import TOKEN_SCOPE_KEY

__all__ = ["admin_app", "API_PREFIX"]

log = logging.getLogger("dispatch_plugins.admin")

#: Where the API lives inside the app.
API_PREFIX = "/v1"


class _Authenticate:
    """ASGI middleware of the ``/v1`` mount: finds the request's token (401 without a valid
    one) and leaves it in the scope for the routes, which check scopes and tenants."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or _route_path(scope) in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        token = self.authenticator.authenticate(_header(scope, b"authorization"))
        if token is None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await error_response(self._refusal(scope))(scope, receive, send)
            return
        scope[TOKEN_SCOPE_KEY] = token
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> ApiError:
        challenge = {"WWW-Authenticate": "Bearer"}
        if not self.authenticator:
            return ApiError(
                401,
                "no_tokens_configured",
                "the admin API has no tokens configured (set DISPATCH_ADMIN_TOKENS or pass "
                "tokens=...); every request is refused",
                headers=challenge,
            )
        given = _header(scope, b"authorization") is not None
        return ApiError(
            401,
            "unauthorized",
            "the bearer token is not valid"
            if given
            else "a bearer token is required (Authorization: Bearer <token>)",
            headers=challenge,
        )


class _SecurityHeaders:
    """ASGI middleware around the whole app (outside Starlette's error handler, so that a 500
    gets them too): ``nosniff`` on every response, ``no-store`` on the API's."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        api = path == API_PREFIX or path.startswith(API_PREFIX + "/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                # API answers are never cached; the dashboard's files say how they may be.
                if api or "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _AdminApp(Starlette):
    """Starlette with :class:`_SecurityHeaders` as the outermost layer."""

    def build_middleware_stack(self) -> ASGIApp:
        return _SecurityHeaders(super().build_middleware_stack())


def _route_path(scope: Scope) -> str:
    """The path below the mount (``/jobs`` for ``/dispatch/v1/jobs``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def admin_app(
    engine: Engine,
    *,
    tokens: Sequence[Token] | None = None,
    dashboard: bool = True,
    manage_engine: bool = False,
) -> Starlette:
    """The admin API and dashboard for ``engine``, as a Starlette app to mount.

    Args:
        engine: The engine to inspect and steer.
        tokens: The API tokens; ``None`` reads ``DISPATCH_ADMIN_TOKENS`` (a JSON list, see
            :func:`~dispatch_plugins.admin.auth.load_tokens`). With no token at all, every API
            request but the health probes and the OpenAPI document is refused (401
            ``no_tokens_configured``): there is never a default token.
        dashboard: Serve the web dashboard at ``/`` and ``/static/``.
        manage_engine: Open the engine when the app starts and close it when it stops (for
            a standalone server); otherwise the host application owns the engine (it opens
            by itself on first use anyway).

    Returns:
        The app. The API is under ``/v1`` of wherever it is mounted; routes that plugins add
        with the ``dispatch_register_routes`` hook are mounted there too (they get
        authenticated requests; ``request_token(request)`` gives the token).

    Raises:
        ValueError: the token configuration is invalid (unknown scope, secret shorter than
            16 characters, two tokens with one secret).
    """
    configured = list(load_tokens() if tokens is None else tokens)
    authenticator = Authenticator(configured)
    if not configured:
        log.warning(
            "admin API: no tokens configured (DISPATCH_ADMIN_TOKENS or tokens=...); every API "
            "request will be refused with 401"
        )
    plugin_routes: list[Any] = []
    # The spec is there when dispatch-admin loaded as a plugin; not with load_entrypoints=False.
    add_hookspecs(engine.pm)
    engine.pm.hook.dispatch_register_routes(routes=plugin_routes, engine=engine)
    routes: list[BaseRoute] = [
        Mount(
            API_PREFIX,
            routes=[*api_routes(engine), *plugin_routes],
            middleware=[Middleware(_Authenticate, authenticator=authenticator)],
        ),
    ]
    if dashboard:
        routes.extend(dashboard_routes())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not manage_engine:
            yield
            return
        await engine.aopen()
        try:
            yield
        finally:
            await engine.aclose()

    return _AdminApp(routes=routes, exception_handlers=exception_handlers(), lifespan=lifespan)
