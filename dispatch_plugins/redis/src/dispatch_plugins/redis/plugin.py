"""The pluggy plugin: registers :class:`RedisStore` under ``redis://``, ``rediss://`` and
``unix://``."""

from __future__ import annotations

from dispatch_core.hookspecs import hookimpl
from dispatch_core.registry import StoreRegistry
from dispatch_plugins.redis.store import RedisStore

__all__ = ["dispatch_register_stores"]


@hookimpl
def dispatch_register_stores(registry: StoreRegistry) -> None:
    """Register the ``redis://``, ``rediss://`` (TLS) and ``unix://`` (socket) schemes."""
    for scheme in ("redis", "rediss", "unix"):
        registry.add(scheme, RedisStore, plugin="dispatch-redis")
