"""The pluggy plugin: registers :class:`PostgresStore` under ``postgresql://`` and
``postgres://``."""

from __future__ import annotations

from dispatch_core.hookspecs import hookimpl
from dispatch_core.registry import StoreRegistry
from dispatch_plugins.postgres.store import PostgresStore

__all__ = ["dispatch_register_stores"]


@hookimpl
def dispatch_register_stores(registry: StoreRegistry) -> None:
    """Register the ``postgresql://`` and ``postgres://`` schemes."""
    registry.add("postgresql", PostgresStore, plugin="dispatch-postgres")
    registry.add("postgres", PostgresStore, plugin="dispatch-postgres")
