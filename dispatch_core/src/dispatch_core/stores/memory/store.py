"""The in-memory store: for unit tests, users' tests and the benchmark baseline.

Everything lives in this process and is lost with it. One lock guards the state, so the store
is safe to share between an event loop and producer threads.

:class:`MemoryStore` is assembled from one mixin per section of the store contract, each over
the shared :class:`~dispatch_core.stores.memory.state.MemoryState`: the operations' code sits
in its section's module, with the contract's signature written once.
"""

from __future__ import annotations

from collections.abc import Callable

from dispatch_core.store import StopListening, Store, SyncStore
from dispatch_core.stores.memory.claim import ClaimOps
from dispatch_core.stores.memory.cluster import ClusterOps
from dispatch_core.stores.memory.dlq import DLQOps
from dispatch_core.stores.memory.jobs import JobsOps, MemorySync
from dispatch_core.stores.memory.workflows import WorkflowOps

__all__ = ["MemoryStore"]


class MemoryStore(JobsOps, ClaimOps, DLQOps, ClusterOps, WorkflowOps, Store):
    """A complete store held in memory. URL: ``memory://``."""

    scheme = "memory"
    #: Every call holds the store's lock, and wake-ups are thread-safe.
    thread_safe = True

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        super().__init__()

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def migrate(self) -> list[str]:
        return []

    async def listen(self, wake: Callable[[], None]) -> StopListening:
        with self._lock:
            self._listeners.append(wake)

        async def stop() -> None:
            with self._lock:
                if wake in self._listeners:
                    self._listeners.remove(wake)

        return stop

    def sync(self) -> SyncStore:
        return MemorySync(self)
