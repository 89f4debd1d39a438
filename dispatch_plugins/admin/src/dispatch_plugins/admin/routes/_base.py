"""What every route shares: the endpoint table, the per-request :class:`Call`, and strict
parsing of query parameters and JSON bodies (every mistake is a 400 naming the field)."""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import attrs
from starlette.requests import Request
from starlette.responses import Response

from dispatch_core import Engine
from dispatch_core.models import SortOrder
from dispatch_plugins.admin.auth import Scope, Token
from dispatch_plugins.admin.codec import JSONResponse, format_datetime, parse_datetime, to_json
from dispatch_plugins.admin.errors import ApiError, invalid_request
from dispatch_plugins.admin.pagination import PAGE_PARAMS, Page, PageRequest, parse_page_request

__all__ = [
    "Call",
    "Endpoint",
    "Endpoints",
    "Handler",
    "Query",
    "Body",
    "TOKEN_SCOPE_KEY",
    "json_response",
    "page_response",
    "check_text",
    "parse_time",
    "MISSING",
]

E = TypeVar("E", bound=enum.Enum)

#: The ASGI scope key where the authentication middleware leaves the request's :class:`Token`.
TOKEN_SCOPE_KEY = "dispatch.admin.token"
#: Longest id, name, queue, tenant or key accepted.
MAX_TEXT = 200
#: Largest request body accepted (payloads included), in bytes.
MAX_BODY = 10 * 1024 * 1024


class _Missing(enum.Enum):
    MISSING = "MISSING"


#: A body field that was not given (as opposed to given as ``null``).
MISSING = _Missing.MISSING

Handler = Callable[["Call"], Awaitable[Response]]


@attrs.frozen(kw_only=True)
class Endpoint:
    """One operation of the API: method, path (relative to ``/v1``), what it needs, handler.

    Attributes:
        scope: The scope a token needs; ``None`` for a public route (no token at all).
        operator_only: Only tokens bound to no tenant may call it.
    """

    method: str
    path: str
    handler: Handler
    scope: Scope | None
    operator_only: bool = False

    @property
    def operation_id(self) -> str:
        """The OpenAPI ``operationId``: the handler's name in camelCase."""
        first, *rest = self.handler.__name__.split("_")
        return first + "".join(part.title() for part in rest)


class Endpoints:
    """A list of endpoints filled by decorators: ``@endpoints.get("/jobs", Scope.JOBS_READ)``."""

    def __init__(self) -> None:
        self.items: list[Endpoint] = []

    def add(
        self, method: str, path: str, scope: Scope | None, *, operator_only: bool = False
    ) -> Callable[[Handler], Handler]:
        """Register the decorated handler for ``method path``."""

        def register(handler: Handler) -> Handler:
            self.items.append(
                Endpoint(
                    method=method,
                    path=path,
                    handler=handler,
                    scope=scope,
                    operator_only=operator_only,
                )
            )
            return handler

        return register

    def get(
        self, path: str, scope: Scope | None, *, operator_only: bool = False
    ) -> Callable[[Handler], Handler]:
        """Register a GET endpoint."""
        return self.add("GET", path, scope, operator_only=operator_only)

    def post(
        self, path: str, scope: Scope | None, *, operator_only: bool = False
    ) -> Callable[[Handler], Handler]:
        """Register a POST endpoint."""
        return self.add("POST", path, scope, operator_only=operator_only)


def check_text(value: object, field: str, *, max_length: int = MAX_TEXT) -> str:
    """``value`` as an identifier-like string: 1 to ``max_length`` characters, no control
    characters, valid Unicode.

    Raises:
        ApiError: 400 naming ``field``.
    """
    if not isinstance(value, str):
        raise invalid_request(f"{field} must be a string", field)
    if not value or len(value) > max_length:
        raise invalid_request(f"{field} must be 1 to {max_length} characters long", field)
    if not _clean(value):
        raise invalid_request(f"{field} must not contain control characters", field)
    return value


def parse_time(value: object, field: str) -> datetime:
    """``value`` as an ISO 8601 timestamp with a timezone (``Z`` or an offset), in UTC.

    Raises:
        ApiError: 400 naming ``field``: not a string, not ISO 8601, no timezone, or no UTC
            form (year 1 with a positive offset, year 9999 with a negative one overflow).
    """
    if not isinstance(value, str):
        raise invalid_request(f"{field} must be an ISO 8601 string", field)
    try:
        return parse_datetime(value)
    except ValueError as exc:
        raise invalid_request(
            f"{field} must be an ISO 8601 timestamp with a timezone "
            f"(e.g. 2026-01-31T12:00:00Z): {exc}",
            field,
        ) from None
    except OverflowError:  # astimezone(UTC) past year 1 or 9999
        raise invalid_request(
            f"{field} is out of range: in UTC it must fall from 0001-01-01T00:00:00Z to "
            f"9999-12-31T23:59:59.999999Z; got {value[:64]!r}",
            field,
        ) from None


def _clean(text: str) -> bool:
    """No control characters, no lone surrogates (which no store or UTF-8 encoder takes)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_response(content: Any, status_code: int = 200) -> Response:
    """A JSON response of ``content`` (models are converted with the codec)."""
    return JSONResponse(to_json(content), status_code=status_code)


def page_response(page: Page, **extra: Any) -> Response:
    """``{"items": [...], "next_cursor": ...}`` (plus ``extra`` fields)."""
    return JSONResponse(
        {"items": to_json(page.items), "next_cursor": page.next_cursor, **to_json(extra)}
    )


class Query:
    """The query parameters of a request, checked against the ones a route accepts."""

    def __init__(self, request: Request, allowed: Iterable[str]) -> None:
        allowed = frozenset(allowed)
        params = request.query_params
        for name in params:
            if name not in allowed:
                known = ", ".join(sorted(allowed)) or "none"
                raise invalid_request(f"unknown query parameter {name!r} (accepted: {known})", name)
            if len(params.getlist(name)) > 1:
                raise invalid_request(f"query parameter {name} is given more than once", name)
        self.params: Mapping[str, str] = dict(params)

    def text(self, name: str) -> str | None:
        """An identifier-like parameter (a queue, a name...), or ``None`` when absent."""
        value = self.params.get(name)
        return None if value is None else check_text(value, name)

    def choice(self, name: str, kind: type[E]) -> E | None:
        """A parameter that must be one of an enum's values."""
        value = self.params.get(name)
        if value is None:
            return None
        try:
            return kind(value)
        except ValueError:
            values = ", ".join(str(m.value) for m in kind)
            raise invalid_request(f"{name} must be one of {values}; got {value!r}", name) from None

    def integer(self, name: str, *, default: int, minimum: int, maximum: int) -> int:
        """An integer parameter within ``[minimum, maximum]``."""
        value = self.params.get(name)
        if value is None:
            return default
        if not value.isascii() or not value.isdigit() or not minimum <= int(value) <= maximum:
            raise invalid_request(
                f"{name} must be an integer from {minimum} to {maximum}, got {value!r}", name
            )
        return int(value)

    def datetime(self, name: str) -> datetime | None:
        """An ISO 8601 timestamp with a timezone (see :func:`parse_time`), or ``None``."""
        value = self.params.get(name)
        return None if value is None else parse_time(value, name)

    def page(self, default_order: SortOrder) -> PageRequest:
        """``limit``, ``cursor`` and ``order``."""
        return parse_page_request(self.params, default_order=default_order)


def _json_problem(value: Any, path: str) -> str | None:
    """The path of the first string in a JSON value that no store can keep (a NUL character
    or a lone surrogate), or ``None``."""
    if isinstance(value, str):
        return None if "\x00" not in value and _encodes(value) else path
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _json_problem(item, f"{path}[{i}]")
            if found:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key or not _encodes(key):
                return path
            found = _json_problem(item, f"{path}.{key}")
            if found:
                return found
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _too_large() -> ApiError:
    return ApiError(
        413,
        "request_too_large",
        f"the body is larger than {MAX_BODY // (1024 * 1024)} MiB",
        {"limit": MAX_BODY},
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


class Body:
    """A JSON object body, checked against the fields a route accepts."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    @classmethod
    async def read(cls, request: Request, allowed: Iterable[str]) -> Body:
        """Parse the body (an empty body is ``{}``) and refuse unknown fields.

        Raises:
            ApiError: 400 when the body is not a JSON object or has a field not in
                ``allowed``.
        """
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            raise _too_large()
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:  # a body without (or with a false) Content-Length
                raise _too_large()
        data: Any = {}
        if raw.strip():
            try:
                data = json.loads(raw, parse_constant=_no_constant)
            except (ValueError, RecursionError) as exc:
                detail = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
                raise invalid_request(f"the body is not valid JSON: {detail}") from None
        if not isinstance(data, dict):
            raise invalid_request("the body must be a JSON object")
        allowed = frozenset(allowed)
        unknown = sorted(k for k in data if k not in allowed)
        if unknown:
            known = ", ".join(sorted(allowed)) or "none"
            raise invalid_request(
                f"unknown field {unknown[0]!r} in the body (accepted: {known})", unknown[0]
            )
        return cls(data)

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def _get(self, name: str, required: bool) -> Any:
        if name not in self.data:
            if required:
                raise invalid_request(f"{name} is required", name)
            return MISSING
        return self.data[name]

    def text(self, name: str, *, required: bool = False) -> str | None:
        """An identifier-like string field; ``None`` when absent or null (unless required)."""
        value = self._get(name, required)
        if value is MISSING or (value is None and not required):
            return None
        return check_text(value, name)

    def integer(
        self, name: str, *, minimum: int, maximum: int, required: bool = False
    ) -> int | None:
        """An integer field within ``[minimum, maximum]``; ``None`` when absent or null."""
        value = self._get(name, required)
        if value is MISSING or (value is None and not required):
            return None
        if type(value) is not int or not minimum <= value <= maximum:
            raise invalid_request(f"{name} must be an integer from {minimum} to {maximum}", name)
        return value

    def number(
        self, name: str, *, minimum: float, maximum: float, exclusive_minimum: bool = False
    ) -> float | None:
        """A number field (seconds...) within the bounds; ``None`` when absent or null."""
        value = self._get(name, False)
        if value is MISSING or value is None:
            return None
        low_ok = (
            type(value) in (int, float)
            and math.isfinite(value)
            and (value > minimum if exclusive_minimum else value >= minimum)
        )
        if not low_ok or value > maximum:
            bound = f"greater than {minimum:g}" if exclusive_minimum else f"at least {minimum:g}"
            raise invalid_request(f"{name} must be a number {bound} and at most {maximum:g}", name)
        return float(value)

    def datetime(
        self,
        name: str,
        *,
        required: bool = False,
        earliest: datetime | None = None,
        latest: datetime | None = None,
    ) -> datetime | None:
        """An ISO 8601 timestamp with a timezone, in UTC; ``None`` when absent or null.

        Raises:
            ApiError: 400 naming the field when it is not such a timestamp, has no UTC form
                (``0001-01-01T00:00:00+05:00``) or falls outside ``[earliest, latest]``.
        """
        value = self._get(name, required)
        if value is MISSING or (value is None and not required):
            return None
        when = parse_time(value, name)
        if (earliest is not None and when < earliest) or (latest is not None and when > latest):
            low = "" if earliest is None else f" from {format_datetime(earliest)}"
            high = "" if latest is None else f" to {format_datetime(latest)}"
            raise invalid_request(
                f"{name} is out of range: it must be a time{low}{high}; got {value[:64]!r}",
                name,
            )
        return when

    def text_list(self, name: str, *, max_items: int) -> list[str] | None:
        """A list of identifier-like strings (1 to ``max_items``); ``None`` when absent."""
        value = self._get(name, False)
        if value is MISSING or value is None:
            return None
        if not isinstance(value, list) or not 1 <= len(value) <= max_items:
            raise invalid_request(f"{name} must be a list of 1 to {max_items} strings", name)
        return [check_text(item, f"{name}[{i}]") for i, item in enumerate(value)]

    def json(self, name: str) -> Any:
        """Any JSON value (a payload...), or :data:`MISSING` when absent.

        Raises:
            ApiError: 422 ``invalid_payload`` for strings no store can keep.
        """
        value = self._get(name, False)
        if value is MISSING:
            return value
        problem = _json_problem(value, "$")
        if problem is not None:
            raise ApiError(
                422,
                "invalid_payload",
                f"{name} holds a string with a NUL character or a lone surrogate at {problem}",
                {"field": name, "path": problem, "problems": []},
            )
        return value


@attrs.frozen(kw_only=True)
class Call:
    """One request as a route sees it: the request, the engine and the caller's token."""

    request: Request
    engine: Engine
    token: Token | None

    @property
    def tenant(self) -> str | None:
        """The tenant the caller is confined to; ``None`` for an operator token."""
        return self.token.tenant if self.token is not None else None

    def path(self, name: str) -> str:
        """A path parameter (an id or a name).

        Raises:
            ApiError: 404 when it cannot be an id or name at all (too long, control
                characters), as for any unknown one.
        """
        value = str(self.request.path_params[name])
        if not value or len(value) > MAX_TEXT or not _clean(value):
            raise ApiError(404, "not_found", f"{name} {value[:50]!r} not found")
        return value

    def query(self, *allowed: str, page: bool = False) -> Query:
        """The query parameters; ``page`` adds ``limit``, ``cursor`` and ``order``."""
        return Query(self.request, [*allowed, *(PAGE_PARAMS if page else ())])

    async def body(self, *allowed: str) -> Body:
        """The JSON body, with only the ``allowed`` fields."""
        return await Body.read(self.request, allowed)

    def tenant_filter(self, asked: str | None) -> str | None:
        """The tenant a listing is confined to: the token's own, or for an operator token
        the one it asked for (``None``: every tenant).

        Raises:
            ApiError: 403 ``operator_only`` when a tenant token asks for another tenant.
        """
        if self.tenant is None:
            return asked
        if asked is not None and asked != self.tenant:
            raise ApiError(
                403,
                "operator_only",
                "only a token bound to no tenant may choose the tenant",
                {"field": "tenant"},
            )
        return self.tenant

    def visible(self, tenant: str | None) -> bool:
        """Whether an object of ``tenant`` is the caller's to see."""
        return self.tenant is None or tenant == self.tenant
