"""Error bodies: every failure of the API is ``{"error": {"code", "message", "details"}}``.

:class:`ApiError` is what the routes raise; :func:`exception_handlers` turns it, Starlette's
own HTTP errors (unknown route, wrong method) and Dispatch's errors into that body with the
right status, so a client never has to parse anything else.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ExceptionHandler

from dispatch_core.errors import (
    InvalidTransitionError,
    NotFoundError,
    PayloadError,
    StoreUnavailableError,
    UnknownJobError,
)
from dispatch_core.storekit import redact_url
from dispatch_core.workflows.errors import WorkflowError
from dispatch_plugins.admin.codec import JSONResponse

__all__ = [
    "ApiError",
    "error_body",
    "error_response",
    "exception_handlers",
    "invalid_request",
    "not_found",
    "option_not_allowed",
    "redact_urls",
]

log = logging.getLogger("dispatch_plugins.admin")

#: The code used for each status when a Starlette HTTPException carries no code of ours.
_STATUS_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "invalid_state",
    413: "request_too_large",
    422: "invalid_payload",
    503: "store_unavailable",
}


class ApiError(Exception):
    """An error the API reports to its client.

    Args:
        status: The HTTP status.
        code: A stable, machine-readable code (``not_found``, ``invalid_request``...).
        message: A sentence for people.
        details: More, as JSON (which field was wrong...), or ``None``.
        headers: Extra response headers (``WWW-Authenticate``...).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = dict(headers or {})


#: A URL in an error text (``postgresql://user:pw@host/db``), up to the next blank or quote.
_URL = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>]+""")


def redact_urls(text: str) -> str:
    """``text`` with every URL in it redacted (:func:`dispatch_core.storekit.redact_url`:
    passwords and secret query values masked), for the log."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def invalid_request(message: str, field: str | None = None, **details: Any) -> ApiError:
    """A 400 ``invalid_request`` naming the offending field (in ``details.field``)."""
    if field is not None:
        details = {"field": field, **details}
    return ApiError(400, "invalid_request", message, details or None)


def option_not_allowed(field: str, message: str, **details: Any) -> ApiError:
    """A 403 ``option_not_allowed``: the token may not set this option (a tenant token's
    ``job_id``, a queue or a priority beyond its job's); ``details.field`` names it."""
    return ApiError(403, "option_not_allowed", message, {"field": field, **details})


def not_found(message: str) -> ApiError:
    """A 404 ``not_found``."""
    return ApiError(404, "not_found", message)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The JSON body of an error."""
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(error: ApiError) -> Response:
    """The response for an :class:`ApiError`."""
    return JSONResponse(
        error_body(error.code, error.message, error.details),
        status_code=error.status,
        headers=error.headers or None,
    )


def _payload_details(exc: PayloadError) -> dict[str, Any]:
    # cattrs problems read "<what> @ $.field.path"; the path is what a client needs.
    paths = [p.rpartition(" @ ")[2] for p in exc.problems if " @ " in p]
    return {"path": paths[0] if paths else "$", "problems": list(exc.problems)}


def to_api_error(exc: Exception) -> ApiError | None:
    """The API error a Dispatch or store exception stands for, or ``None`` (a bug: 500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UnknownJobError):
        return ApiError(422, "unknown_job", str(exc), {"name": exc.name})
    if isinstance(exc, PayloadError):
        return ApiError(422, "invalid_payload", str(exc), _payload_details(exc))
    if isinstance(exc, NotFoundError):
        return ApiError(404, "not_found", str(exc))
    if isinstance(exc, InvalidTransitionError):
        return ApiError(409, "invalid_state", str(exc), {"state": exc.current})
    if isinstance(exc, WorkflowError):
        return ApiError(409, "invalid_state", str(exc))
    if isinstance(exc, StoreUnavailableError | OSError):
        # OSError covers refused connections and timeouts that a store did not wrap.
        text = redact_urls(str(exc))
        log.warning("admin API: store unavailable: %s", text)
        return ApiError(503, "store_unavailable", f"the store is unavailable: {text}")
    return None


async def _api_error(request: Request, exc: Exception) -> Response:
    error = to_api_error(exc)
    if error is None:
        return await _server_error(request, exc)
    if error.status == 503 and _tenant_request(request):
        # A store's error names its user, host and database: not a tenant's to know.
        error = ApiError(
            503,
            "store_unavailable",
            f"the store is unavailable ({type(exc).__name__}); the server log has the details",
        )
    return error_response(error)


def _tenant_request(request: Request) -> bool:
    """Whether a token bound to a tenant made the request."""
    from dispatch_plugins.admin.routes._base import TOKEN_SCOPE_KEY  # it imports this module

    token = request.scope.get(TOKEN_SCOPE_KEY)
    return getattr(token, "tenant", None) is not None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _STATUS_CODES.get(exc.status_code, "http_error")
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"method {request.method} is not allowed here (allowed: {allowed})"
    else:
        message = str(exc.detail)
    return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error(
        "admin API: unexpected error in %s %s", request.method, request.url.path, exc_info=exc
    )
    return JSONResponse(
        error_body("internal_error", "internal server error; the server log has the details"),
        status_code=500,
    )


def exception_handlers() -> dict[Any, ExceptionHandler]:
    """Starlette exception handlers producing the error body for every failure."""
    handlers: dict[Any, ExceptionHandler] = {
        HTTPException: _http_error,
        ApiError: _api_error,
        UnknownJobError: _api_error,
        PayloadError: _api_error,
        NotFoundError: _api_error,
        InvalidTransitionError: _api_error,
        WorkflowError: _api_error,
        StoreUnavailableError: _api_error,
        OSError: _api_error,
        # Starlette hands this one to ServerErrorMiddleware: the body is still ours.
        Exception: _server_error,
    }
    return handlers
