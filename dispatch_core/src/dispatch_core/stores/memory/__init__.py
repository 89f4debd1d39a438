"""The in-memory store (``memory://``), split by the sections of the store contract.

:mod:`.state` holds the rows and the lock; :mod:`.jobs`, :mod:`.claim`, :mod:`.dlq`,
:mod:`.cluster` and :mod:`.workflows` hold the operations of each section, and :mod:`.store`
assembles them into :class:`MemoryStore`.
"""

from __future__ import annotations

from dispatch_core.stores.memory.store import MemoryStore

__all__ = ["MemoryStore"]
