"""dispatch-admin: the admin HTTP API, the web dashboard and ``dispatch serve``.

Mount the app where it should live (``/dispatch`` by convention)::

    from starlette.applications import Starlette
    from starlette.routing import Mount
    from dispatch_plugins.admin import Token, admin_app

    tokens = [Token(name="ops", secret=os.environ["OPS_TOKEN"], scopes={"admin"})]
    app = Starlette(routes=[Mount("/dispatch", app=admin_app(engine, tokens=tokens))])

The API is then under ``/dispatch/v1`` (its OpenAPI document at ``/dispatch/v1/openapi.json``)
and the dashboard at ``/dispatch/``. ``AdminClient`` talks to it from Python, and the
``dispatch`` CLI uses it for ``--url https://...``. See ``docs/operations.md``.
"""

from __future__ import annotations

from dispatch_plugins.admin.app import API_PREFIX, admin_app
from dispatch_plugins.admin.auth import TOKENS_ENV, Scope, Token, load_tokens, parse_tokens
from dispatch_plugins.admin.client import (
    AdminAPIError,
    AdminAuthError,
    AdminClient,
    AdminUnavailableError,
)

__all__ = [
    "admin_app",
    "API_PREFIX",
    "Token",
    "Scope",
    "load_tokens",
    "parse_tokens",
    "TOKENS_ENV",
    "AdminClient",
    "AdminAPIError",
    "AdminAuthError",
    "AdminUnavailableError",
]
