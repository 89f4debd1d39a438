"""Stores that ship with the core (the in-memory store, for tests and development)."""

from __future__ import annotations

from dispatch_core.stores.memory import MemoryStore

__all__ = ["MemoryStore"]
