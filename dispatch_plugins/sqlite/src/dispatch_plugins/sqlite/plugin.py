"""The pluggy plugin: registers :class:`SQLiteStore` under the ``sqlite`` URL scheme."""

from __future__ import annotations

from dispatch_core.hookspecs import hookimpl
from dispatch_core.registry import StoreRegistry
from dispatch_plugins.sqlite.store import SQLiteStore

__all__ = ["dispatch_register_stores"]


@hookimpl
def dispatch_register_stores(registry: StoreRegistry) -> None:
    """Register the ``sqlite://`` scheme."""
    registry.add("sqlite", SQLiteStore, plugin="dispatch-sqlite")
