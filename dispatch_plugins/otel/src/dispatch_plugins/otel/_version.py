"""The installed version of dispatch-otel (the instrumentation scope's version)."""

from __future__ import annotations

import importlib.metadata

__all__ = ["VERSION"]

try:
    VERSION = importlib.metadata.version("dispatch-otel")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkout
    VERSION = "0.0.0"
