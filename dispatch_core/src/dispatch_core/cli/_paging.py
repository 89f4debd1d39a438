"""Keyset paging for the ``ls`` commands: ``--limit``, ``--after ID``, ``--order asc|desc``.

Pages are cut by id, not by offset: an offset skips or repeats rows while jobs arrive, and the
admin API (``--url http://...``) pages by cursor only. The footer of a full page names the
``--after`` value of the next one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from dispatch_core.models import SortOrder

__all__ = ["ORDERS", "LIST_PREVIEW", "echo_next_page", "list_preview", "page_options"]

FC = TypeVar("FC", bound=Callable[..., Any])

ORDERS = [o.value for o in SortOrder]

#: Bytes of JSON up to which ``ls --json`` prints a body (payload, result, run input or
#: output) whole; a longer one is printed as a preview (``show`` prints it whole).
LIST_PREVIEW = 200


def list_preview(as_json: bool) -> int:
    """The ``preview`` an ``ls`` command asks for: the tables show no body, so none is read;
    JSON shows previews of :data:`LIST_PREVIEW` bytes."""
    return LIST_PREVIEW if as_json else 0


def page_options(noun: str, *, default_order: SortOrder) -> Callable[[FC], FC]:
    """The ``--limit``, ``--after`` and ``--order`` options of a listing of ``noun`` (plural).

    Args:
        noun: What is listed, plural (``jobs``), for the help texts.
        default_order: The listing's natural order.
    """

    def decorate(f: FC) -> FC:
        f = click.option(
            "--order",
            type=click.Choice(ORDERS, case_sensitive=False),
            default=default_order.value,
            show_default=True,
            help=f"By id, which is creation order: asc lists the oldest {noun} first.",
        )(f)
        f = click.option(
            "--after",
            metavar="ID",
            help=f"Only {noun} after ID in the listing's order: the last ID of the previous "
            f"page (the footer of a full page gives it).",
        )(f)
        f = click.option(
            "--limit",
            type=click.IntRange(min=1),
            default=50,
            show_default=True,
            help=f"Most {noun} shown.",
        )(f)
        return f

    return decorate


def echo_next_page(ids: list[str], limit: int) -> None:
    """After a full page, tell on stderr how to get the next one."""
    if ids and len(ids) >= limit:
        click.echo(f"({limit} shown; next page: --after {ids[-1]})", err=True)
