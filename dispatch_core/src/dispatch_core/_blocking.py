"""Blocking calls: the engine's twins for code without an event loop.

A store with a sync driver (sqlite3, psycopg's sync pool, redis.Redis) answers them directly;
one without gets a private event loop in a thread (the portal) with a store instance of its
own. The store is migrated before the first blocking call, as ``aopen`` does for async ones.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from dispatch_core.errors import DispatchError, StoreUnavailableError, SyncInAsyncContextError
from dispatch_core.models import utcnow

if TYPE_CHECKING:
    from dispatch_core.engine import Engine
    from dispatch_core.store import Store, SyncStore

__all__ = ["BlockingStore", "no_running_loop", "run_blocking"]

T = TypeVar("T")


def no_running_loop(method: str, twin: str) -> None:
    """Refuse a blocking call made inside a running event loop, naming its async twin.

    Raises:
        SyncInAsyncContextError: an event loop runs in this thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise SyncInAsyncContextError(method, twin)


def run_blocking(
    engine: Engine, method: str, twin: str, make: Callable[[], Coroutine[Any, Any, T]]
) -> T:
    """Run an async engine call from code with no event loop, on a private loop that closes
    the engine's store when it ends."""
    no_running_loop(method, twin)

    async def closing() -> T:
        try:
            return await make()
        finally:
            await engine.aclose()

    return asyncio.run(closing())


class BlockingStore:
    """The engine's store as blocking calls see it: its sync twin, or a portal."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sync: SyncStore | None = None
        self._portal: _Portal | None = None
        self._lock = threading.Lock()  # blocking calls come from any thread
        self._migrated = False

    def call(self, method: str, *args: Any) -> Any:
        """Call ``method`` of the sync store, or of the async store through the portal."""
        sync = self.sync()
        if sync is not None:
            return getattr(sync, method)(*args)
        portal = self._portal
        assert portal is not None
        if method == "cancel":
            return portal.call(portal.store.cancel(*args, now=utcnow()))
        return portal.call(getattr(portal.store, method)(*args))

    def sync(self) -> SyncStore | None:
        """The store's sync twin (opened, and the store migrated, at the first call), or
        ``None`` when it has none and the portal serves instead.

        Raises:
            StoreUnavailableError: the store cannot be opened or migrated.
        """
        engine = self.engine
        with self._lock:
            if self._sync is None and self._portal is None:
                try:
                    self._sync = engine.store.sync()
                except StoreUnavailableError:
                    raise
                except Exception as exc:
                    raise StoreUnavailableError(
                        f"cannot open store {engine.safe_url}: {exc}"
                    ) from exc
                if self._sync is None:
                    self._portal = _Portal(engine)
                if engine.auto_migrate and not self._migrated:
                    self._migrate()
            return self._sync

    def _migrate(self) -> None:
        engine = self.engine
        if engine.opened:
            return  # an event loop has the store open, and migrated it when it opened it
        store = engine.new_store() or engine.store

        async def migrate() -> None:
            await store.open()
            try:
                await store.migrate()
            finally:
                if store is not engine.store:
                    await store.close()

        try:
            asyncio.run(migrate())
        except DispatchError:
            raise
        except Exception as exc:
            raise StoreUnavailableError(f"migrating store {engine.safe_url} failed: {exc}") from exc
        self._migrated = True

    def close(self) -> None:
        """Release the sync producer and the portal's thread."""
        with self._lock:
            if self._sync is not None:
                self._sync.close()
                self._sync = None
            if self._portal is not None:
                self._portal.stop()
                self._portal = None


class _Portal:
    """A private event loop in a thread, for sync calls on a store with no sync driver."""

    def __init__(self, engine: Engine) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="dispatch-portal", daemon=True
        )
        self.thread.start()
        self.store: Store = engine.new_store() or engine.store
        self.call(self._open())

    async def _open(self) -> None:
        await self.store.open()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        try:
            self.call(self.store.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
            if not self.loop.is_running():
                self.loop.close()
