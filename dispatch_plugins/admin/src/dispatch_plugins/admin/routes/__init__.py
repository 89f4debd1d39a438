"""The API's routes: every :class:`Endpoint`, and the Starlette routes that serve them.

Each module lists its endpoints with the scope they need; :func:`api_routes` turns them into
one Starlette route per path (so a wrong method gets a 405 naming every allowed one) whose
handler checks the token's scope and tenant before calling the endpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dispatch_core import Engine
from dispatch_plugins.admin.auth import Token
from dispatch_plugins.admin.errors import ApiError
from dispatch_plugins.admin.routes import cluster, dlq, health, jobs, stats, workflows
from dispatch_plugins.admin.routes._base import (
    TOKEN_SCOPE_KEY,
    Call,
    Endpoint,
    Endpoints,
    json_response,
)

__all__ = ["ENDPOINTS", "PUBLIC_PATHS", "api_routes", "request_token", "Endpoint", "Call"]

_meta = Endpoints()


@_meta.get("/openapi.json", None)
async def get_openapi(call: Call) -> Response:
    """The OpenAPI 3.1 document of this API, with the server URL it is mounted at."""
    from dispatch_plugins.admin.openapi import openapi_document  # it reads ENDPOINTS below

    call.query()
    root = call.request.scope.get("root_path", "")
    # The document's paths start with /v1; the server is the admin app's mount point.
    server = root[: -len("/v1")] if root.endswith("/v1") else root
    return json_response(openapi_document(server_url=server or "/"))


#: Every endpoint, in matching order: fixed paths before parameterised ones.
ENDPOINTS: tuple[Endpoint, ...] = (
    *health.endpoints.items,
    *_meta.items,
    *jobs.endpoints.items,
    *dlq.endpoints.items,
    *workflows.endpoints.items,
    *cluster.endpoints.items,
    *stats.endpoints.items,
)

#: Paths (relative to ``/v1``) served without a token.
PUBLIC_PATHS = frozenset(e.path for e in ENDPOINTS if e.scope is None)


def request_token(request: Request) -> Token | None:
    """The token that authenticated ``request`` (for routes that plugins add under ``/v1``)."""
    token = request.scope.get(TOKEN_SCOPE_KEY)
    return token if isinstance(token, Token) else None


def _authorize(endpoint: Endpoint, token: Token | None) -> None:
    if endpoint.scope is None:
        return
    if token is None:  # the middleware lets no such request through; never serve one
        raise ApiError(401, "unauthorized", "a bearer token is required")
    if endpoint.operator_only and token.tenant is not None:
        raise ApiError(
            403,
            "operator_only",
            f"{endpoint.method} /v1{endpoint.path} is for operator tokens (bound to no tenant); "
            f"token {token.name!r} is bound to a tenant",
        )
    if not token.allows(endpoint.scope):
        raise ApiError(
            403,
            "forbidden",
            f"token {token.name!r} lacks the scope {endpoint.scope.value!r}",
            {"required": endpoint.scope.value},
        )


def _route(path: str, endpoints: Sequence[Endpoint], engine: Engine) -> Route:
    by_method = {e.method: e for e in endpoints}
    if "GET" in by_method:
        by_method.setdefault("HEAD", by_method["GET"])

    async def serve(request: Request) -> Response:
        endpoint = by_method[request.method]
        token = request_token(request)
        _authorize(endpoint, token)
        return await endpoint.handler(Call(request=request, engine=engine, token=token))

    return Route(path, serve, methods=list(by_method), name=endpoints[0].operation_id)


def api_routes(engine: Engine) -> list[Route]:
    """The Starlette routes of the API (relative to ``/v1``), serving ``engine``."""
    paths: dict[str, list[Endpoint]] = {}
    for endpoint in ENDPOINTS:
        paths.setdefault(endpoint.path, []).append(endpoint)
    return [_route(path, group, engine) for path, group in paths.items()]
