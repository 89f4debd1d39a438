"""Keyset pagination: ``limit``, ``cursor`` and ``order`` in; ``items`` and ``next_cursor`` out.

A cursor is the key (id or name) of the last item of a page, base64url-encoded so that
clients treat it as opaque. The next page holds the items strictly after that key in the
chosen order, so pages stay stable while new items arrive (unlike offsets). A page is
fetched with one item more than asked for: when that extra item exists, there is a next page;
when it does not, ``next_cursor`` is ``null``.

Pages of jobs, dead letters and runs carry previews of long bodies (``?preview=``, bytes, by
default :data:`LIST_PREVIEW`): a page of the most items holds at most about
``MAX_LIMIT * 2 * MAX_PREVIEW`` bytes of bodies, whatever the store holds.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from dispatch_core.models import SortOrder
from dispatch_plugins.admin.errors import ApiError, invalid_request

__all__ = [
    "Page",
    "PageRequest",
    "encode_cursor",
    "decode_cursor",
    "parse_page_request",
    "page_of",
    "paginate",
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "PAGE_PARAMS",
    "LIST_PREVIEW",
    "MAX_PREVIEW",
    "parse_preview",
]

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
#: Longest cursor accepted (the keys are ids and names of at most a few hundred characters).
_MAX_CURSOR = 1024
#: The query parameters :func:`parse_page_request` reads.
PAGE_PARAMS = frozenset({"limit", "cursor", "order"})
#: Bytes of JSON a listed body is shown in full up to; a longer one is sent as a preview of
#: that many bytes (the detail routes send it whole).
LIST_PREVIEW = 200
#: The longest preview ``?preview=`` may ask for.
MAX_PREVIEW = 1024


def encode_cursor(key: str) -> str:
    """The opaque cursor for ``key``: base64url of its UTF-8 bytes, without padding."""
    return base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The key a cursor made by :func:`encode_cursor` stands for.

    Raises:
        ApiError: 400 ``invalid_cursor`` when the string is not such a cursor.
    """
    bad = ApiError(
        400,
        "invalid_cursor",
        "cursor is not a cursor this API returned; pass next_cursor as it was given",
        {"field": "cursor"},
    )
    if not cursor or len(cursor) > _MAX_CURSOR:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        raise bad from None
    # Only the canonical spelling decodes, so a cursor has exactly one valid form.
    if not key or encode_cursor(key) != cursor or not key.isprintable():
        raise bad
    return key


@attrs.frozen(kw_only=True)
class PageRequest:
    """What a client asked for: at most ``limit`` items after ``after`` in ``order``."""

    limit: int = DEFAULT_LIMIT
    after: str | None = None
    order: SortOrder = SortOrder.DESC


@attrs.frozen(kw_only=True)
class Page:
    """One page: the items and the cursor of the next page (``None`` on the last one)."""

    items: list[Any]
    next_cursor: str | None


def parse_page_request(params: Mapping[str, str], *, default_order: SortOrder) -> PageRequest:
    """Read ``limit`` (1 to 1000, default 50), ``cursor`` and ``order`` (``asc``/``desc``).

    Raises:
        ApiError: 400 naming the parameter that is wrong.
    """
    limit = DEFAULT_LIMIT
    raw_limit = params.get("limit")
    if raw_limit is not None:
        if (
            not raw_limit.isascii()
            or not raw_limit.isdigit()
            or not 1 <= int(raw_limit) <= MAX_LIMIT
        ):
            raise invalid_request(
                f"limit must be an integer from 1 to {MAX_LIMIT}, got {raw_limit!r}", "limit"
            )
        limit = int(raw_limit)
    order = default_order
    raw_order = params.get("order")
    if raw_order is not None:
        try:
            order = SortOrder(raw_order)
        except ValueError:
            raise invalid_request(
                f"order must be 'asc' or 'desc', got {raw_order!r}", "order"
            ) from None
    raw_cursor = params.get("cursor")
    after = decode_cursor(raw_cursor) if raw_cursor is not None else None
    return PageRequest(limit=limit, after=after, order=order)


def parse_preview(params: Mapping[str, str]) -> int:
    """Read ``preview`` (0 to :data:`MAX_PREVIEW` bytes, default :data:`LIST_PREVIEW`).

    Raises:
        ApiError: 400 naming the parameter.
    """
    raw = params.get("preview")
    if raw is None:
        return LIST_PREVIEW
    # the length first: int() refuses (ValueError) numbers of thousands of digits
    if len(raw) > 6 or not raw.isascii() or not raw.isdigit() or int(raw) > MAX_PREVIEW:
        raise invalid_request(
            f"preview must be an integer from 0 to {MAX_PREVIEW} (bytes), got {raw!r}",
            "preview",
        )
    return int(raw)


def page_of(fetched: Sequence[T], request: PageRequest, key: Callable[[T], str]) -> Page:
    """The page from ``fetched``, which holds up to ``limit + 1`` items in order: the extra
    item only says that a next page exists."""
    items = list(fetched[: request.limit])
    more = len(fetched) > request.limit
    return Page(items=items, next_cursor=encode_cursor(key(items[-1])) if more else None)


def paginate(items: Sequence[T], request: PageRequest, key: Callable[[T], str]) -> Page:
    """Page through a list held in memory (queues, cron entries...) by ``key``."""
    ordered = sorted(items, key=key, reverse=request.order is SortOrder.DESC)
    if request.after is not None:
        after = request.after
        if request.order is SortOrder.DESC:
            ordered = [x for x in ordered if key(x) < after]
        else:
            ordered = [x for x in ordered if key(x) > after]
    return page_of(ordered[: request.limit + 1], request, key)
