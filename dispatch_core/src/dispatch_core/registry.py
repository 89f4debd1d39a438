"""The store registry: URL schemes -> store factories, filled by ``dispatch_register_stores``."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from dispatch_core._urls import redact_url
from dispatch_core.errors import PluginMissingError, StoreURLError
from dispatch_core.store import Store

__all__ = ["StoreRegistry", "StoreFactory", "KNOWN_SCHEMES"]

#: ``factory(url)`` returns an unopened store for ``url``.
StoreFactory = Callable[[str], Store]

#: Schemes whose plugin lives in a separate distribution, so a missing one can be named.
KNOWN_SCHEMES: dict[str, str] = {
    "sqlite": "dispatch-sqlite",
    "postgresql": "dispatch-postgres",
    "postgres": "dispatch-postgres",
    "redis": "dispatch-redis",
    "rediss": "dispatch-redis",
    "unix": "dispatch-redis",
}


class StoreRegistry:
    """Maps URL schemes to store factories."""

    def __init__(self) -> None:
        self._factories: dict[str, tuple[StoreFactory, str]] = {}

    def add(self, scheme: str, factory: StoreFactory, *, plugin: str = "") -> None:
        """Register ``factory`` for ``scheme`` (``"sqlite"``, ``"postgresql"``...).

        The first registration of a scheme wins, so a user plugin (called before the
        ``trylast`` built-ins) can replace a built-in store.
        """
        self._factories.setdefault(scheme.lower(), (factory, plugin))

    def schemes(self) -> list[str]:
        """The registered schemes, sorted."""
        return sorted(self._factories)

    def create(self, url: str) -> Store:
        """Build an unopened store for ``url``.

        Raises:
            StoreURLError: the URL has no scheme or no installed plugin handles it; the
                message lists the installed schemes.
            PluginMissingError: the scheme is known but its distribution is not installed.
        """
        scheme = urlsplit(url).scheme.lower() if "://" in url else ""
        installed = ", ".join(f"{s}://" for s in self.schemes()) or "none"
        if not scheme:
            raise StoreURLError(
                f"store URL {redact_url(url)!r} has no scheme; expected e.g. sqlite:///jobs.db "
                f"(installed schemes: {installed})"
            )
        entry = self._factories.get(scheme)
        if entry is None:
            if scheme in KNOWN_SCHEMES:
                raise PluginMissingError(scheme, KNOWN_SCHEMES[scheme])
            raise StoreURLError(
                f"no installed plugin handles store URL scheme {scheme!r} in {redact_url(url)!r}; "
                f"installed schemes: {installed}"
            )
        return entry[0](url)
