"""The built-in plugin: the memory store and the default middleware, registered ``trylast``
so that any user plugin can override them."""

from __future__ import annotations

from dispatch_core.hookspecs import hookimpl
from dispatch_core.middleware import (
    LOGGING,
    RECOVER,
    SCOPE,
    TIMEOUT,
    MiddlewareRegistry,
    logging_middleware,
    recover_middleware,
    scope_middleware,
    timeout_middleware,
)
from dispatch_core.registry import StoreRegistry
from dispatch_core.stores.memory import MemoryStore


@hookimpl(trylast=True)
def dispatch_register_stores(registry: StoreRegistry) -> None:
    registry.add("memory", MemoryStore, plugin="dispatch-core")


@hookimpl(trylast=True)
def dispatch_register_middleware(registry: MiddlewareRegistry) -> None:
    registry.add("recover", recover_middleware, order=RECOVER)
    registry.add("logging", logging_middleware, order=LOGGING)
    registry.add("scope", scope_middleware, order=SCOPE)
    registry.add("timeout", timeout_middleware, order=TIMEOUT)
