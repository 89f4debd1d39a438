"""The plugin dispatch-core discovers by entry point: ``dispatch serve``, the client that
lets the operator commands take an ``http(s)://`` ``--url``, and the specifications of the
hooks dispatch-admin calls (:mod:`dispatch_plugins.admin.hookspecs`).

Every engine loads this module, so it imports nothing heavy: the server (uvicorn, Starlette)
and the client (httpx) are imported when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dispatch_core.hookspecs import hookimpl
from dispatch_plugins.admin import hookspecs

if TYPE_CHECKING:
    import click
    import pluggy

    from dispatch_plugins.admin.client import AdminClient

__all__ = ["dispatch_add_hookspecs", "dispatch_register_commands", "dispatch_remote_operations"]


@hookimpl
def dispatch_add_hookspecs(pluginmanager: pluggy.PluginManager) -> None:
    """Add ``dispatch_register_routes`` (see :mod:`dispatch_plugins.admin.hookspecs`)."""
    hookspecs.add_hookspecs(pluginmanager)


@hookimpl
def dispatch_register_commands(cli: click.Group) -> None:
    """Add ``dispatch serve``."""
    from dispatch_plugins.admin.serve import serve

    cli.add_command(serve)


@hookimpl
def dispatch_remote_operations(url: str, token: str | None) -> AdminClient | None:
    """An :class:`~dispatch_plugins.admin.client.AdminClient` for an ``http://`` or
    ``https://`` URL (where the admin app is mounted); ``None`` for any other URL."""
    if not url.strip().lower().startswith(("http://", "https://")):
        return None
    from dispatch_plugins.admin.client import AdminClient

    return AdminClient(url, token)
