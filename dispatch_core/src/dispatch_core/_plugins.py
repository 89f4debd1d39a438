"""The plugin manager and the out-of-band caller for lifecycle hooks."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.metadata
import inspect
import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import pluggy

from dispatch_core import hookspecs

__all__ = [
    "ENTRY_POINT_GROUP",
    "PLUGIN_HOOKS",
    "TRACE_ENV",
    "make_plugin_manager",
    "Hooks",
    "PluginInfo",
    "list_plugins",
]

ENTRY_POINT_GROUP = "dispatch_core.plugins"
#: Set (to anything but empty) to log every hook call at DEBUG on ``dispatch_core.plugins``.
TRACE_ENV = "DISPATCH_TRACE_PLUGINS"
log = logging.getLogger("dispatch_core.plugins")

#: Hooks whose specifications belong to a plugin distribution, which adds them when it loads
#: (``dispatch_add_hookspecs``). Implementing one while that distribution is absent or
#: blocked is not a misspelling: the implementation is kept and simply never called.
PLUGIN_HOOKS: dict[str, str] = {"dispatch_register_routes": "dispatch-admin"}

Listener = Callable[[str, dict[str, Any]], None]


def _tracing() -> bool:
    return bool(os.environ.get(TRACE_ENV))


def make_plugin_manager(
    *, load_entrypoints: bool = True, plugins: Iterable[object] = ()
) -> pluggy.PluginManager:
    """Build a plugin manager for one engine (never a module global).

    Built-ins are registered ``trylast`` so user plugins win; ``DISPATCH_DISABLE_PLUGINS``
    (comma-separated names) blocks plugins; ``DISPATCH_TRACE_PLUGINS=1`` logs every hook call
    (the lifecycle hooks, which :class:`Hooks` calls, included). A plugin adds hook
    specifications of its own with ``dispatch_add_hookspecs``, called as it registers.

    Raises:
        pluggy.PluginValidationError: a plugin implements a hook nobody specifies (a
            misspelling), or implements one with arguments its specification lacks.
    """
    from dispatch_core import _builtins

    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    # Historic: each plugin registered from now on is called as it registers, so its specs
    # exist before the check below.
    pm.hook.dispatch_add_hookspecs.call_historic(kwargs={"pluginmanager": pm})
    for name in filter(
        None, (n.strip() for n in os.environ.get("DISPATCH_DISABLE_PLUGINS", "").split(","))
    ):
        pm.set_blocked(name)
    pm.register(_builtins, name="dispatch_core.builtins")
    for plugin in plugins:
        pm.register(plugin)
    if load_entrypoints:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    _check_pending(pm)
    if _tracing():
        pm.add_hookcall_monitoring(
            lambda name, impls, kwargs: _log_call(name, len(impls)),
            lambda outcome, name, impls, kwargs: None,
        )
    return pm


def _log_call(name: str, impls: int) -> None:
    log.debug("hook %s -> %d impls", name, impls)


def _check_pending(pm: pluggy.PluginManager) -> None:
    """``pm.check_pending()``, except for :data:`PLUGIN_HOOKS` whose plugin is not loaded."""
    for name, caller in vars(pm.hook).items():
        if name.startswith("_") or not isinstance(caller, pluggy.HookCaller):
            continue
        if caller.has_spec() or name in PLUGIN_HOOKS:
            continue
        for impl in caller.get_hookimpls():
            if not impl.optionalhook:
                raise pluggy.PluginValidationError(
                    impl.plugin,
                    f"unknown hook {name!r} in plugin {impl.plugin!r}: no installed "
                    "distribution specifies it (misspelled?); see docs/reference/hooks.md",
                )


class PluginInfo:
    """A loaded plugin: its name, distribution, version and the hooks it implements."""

    def __init__(self, name: str, distribution: str | None, version: str | None, hooks: list[str]):
        self.name = name
        self.distribution = distribution
        self.version = version
        self.hooks = hooks


def list_plugins(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """Describe the plugins registered with ``pm`` (for ``dispatch plugins``)."""
    dists = {id(p): d for p, d in pm.list_plugin_distinfo()}
    out: list[PluginInfo] = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        dist = dists.get(id(plugin))
        dist_name = dist.project_name if dist is not None else None
        version = dist.version if dist is not None else None
        if dist is None and name.startswith("dispatch_core"):
            dist_name = "dispatch-core"
            version = importlib.metadata.version("dispatch-core")
        hooks = sorted(h.name for h in (pm.get_hookcallers(plugin) or []))
        out.append(PluginInfo(name, dist_name, version, hooks))
    return sorted(out, key=lambda p: p.name)


def _unknown_hook(name: str) -> ValueError:
    known = ", ".join(hookspecs.LIFECYCLE_HOOKS)
    return ValueError(f"unknown lifecycle hook {name!r}; the lifecycle hooks are: {known}")


#: Seconds the private hook loop waits, once woken by sync code, for more calls to batch.
_THREAD_PASS_DELAY = 0.005


class Hooks:
    """Emits lifecycle hooks out of band.

    ``emit`` never blocks and never raises for a lifecycle hook: it records the call for
    listeners (tests) and, if any plugin implements the hook, queues it for a background task
    that awaits each implementation under ``timeout`` and logs its failures. A hook nobody
    implements costs a dict lookup. A name that is no lifecycle hook (a misspelling) raises
    ``ValueError`` at once, from ``emit`` and ``wants`` alike, instead of notifying nobody.
    With ``DISPATCH_TRACE_PLUGINS`` set, each call of the implementations is logged like the
    hooks pluggy calls.
    """

    def __init__(self, pm: pluggy.PluginManager, *, timeout: float = 10.0) -> None:
        self._pm = pm
        self._timeout = timeout
        self._listeners: list[Listener] = []
        # One lookup per call answers both "is it a hook?" (a key) and "does anyone care?".
        #: Lifecycle hook -> whether a plugin implements it.
        self._implemented: dict[str, bool] = {}
        #: Lifecycle hook -> whether emitting it reaches anyone (a plugin or a listener).
        self._wanted: dict[str, bool] = {}
        self._queue: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._thread_lock = threading.Lock()
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        #: Calls emitted from threads without a loop, for the private loop's next pass.
        self._thread_queue: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        self._thread_pass_due = False
        self._traced = _tracing()
        self.refresh()

    def refresh(self) -> None:
        """Recompute which lifecycle hooks have implementations (after registering a plugin)."""
        self._implemented = {
            name: bool(getattr(self._pm.hook, name).get_hookimpls())
            for name in hookspecs.LIFECYCLE_HOOKS
        }
        self._refresh_wanted()

    def _refresh_wanted(self) -> None:
        listened = bool(self._listeners)
        self._wanted = {name: listened or impl for name, impl in self._implemented.items()}

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(hook_name, kwargs)`` synchronously on every emit."""
        self._listeners.append(listener)
        self._refresh_wanted()

    def remove_listener(self, listener: Listener) -> None:
        """Undo :meth:`add_listener`."""
        self._listeners.remove(listener)
        self._refresh_wanted()

    def wants(self, name: hookspecs.LifecycleHook) -> bool:
        """Whether emitting ``name`` would reach anyone (lets callers skip building arguments).

        Raises:
            ValueError: ``name`` is not a lifecycle hook.
        """
        try:
            return self._wanted[name]
        except KeyError:
            raise _unknown_hook(name) from None

    def emit(self, name: hookspecs.LifecycleHook, **kwargs: Any) -> None:
        """Queue lifecycle hook ``name`` with ``kwargs``; safe from any thread.

        Raises:
            ValueError: ``name`` is not a lifecycle hook.
        """
        implemented = self._implemented.get(name)
        if implemented is None:
            raise _unknown_hook(name)
        for listener in self._listeners:
            try:
                listener(name, kwargs)
            except Exception:
                log.exception("event listener failed on %s", name)
        if not implemented:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            # Called from plain sync code (a Flask view): hand over to a private loop thread.
            # It wakes once per burst, a few milliseconds after the first call, rather than
            # once per call: waking a thread per enqueue would cost the caller more than the
            # enqueue itself.
            with self._thread_lock:
                self._thread_queue.append((name, kwargs))
                if self._thread_pass_due:
                    return
                self._thread_pass_due = True
            background = self._background_loop()
            background.call_soon_threadsafe(
                background.call_later, _THREAD_PASS_DELAY, self._start_thread_pass, background
            )
            return
        if self._loop is not loop or self._task is None or self._task.done():
            self._start(loop)
        self._queue.append((name, kwargs))
        assert self._wakeup is not None
        assert self._idle is not None
        self._idle.clear()
        self._wakeup.set()

    async def flush(self) -> None:
        """Wait until every queued hook call of this loop has run."""
        if self._task is None or self._idle is None or self._loop is not asyncio.get_running_loop():
            return
        await self._idle.wait()

    async def aclose(self) -> None:
        """Flush (for at most a few hook timeouts), then stop the background task."""
        try:
            await asyncio.wait_for(self.flush(), 3 * self._timeout)
        except TimeoutError:
            log.warning("lifecycle hooks still running after %ss; stopping them", 3 * self._timeout)
        if self._task is not None and self._loop is asyncio.get_running_loop():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        self._loop = None

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue.clear()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task = loop.create_task(self._run(), name="dispatch-hooks")

    async def _run(self) -> None:
        assert self._wakeup is not None
        assert self._idle is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                name, kwargs = self._queue.popleft()
                await self._call_all(name, kwargs)
            self._idle.set()

    async def _call_all(self, name: str, kwargs: dict[str, Any]) -> None:
        impls = getattr(self._pm.hook, name).get_hookimpls()
        if self._traced:
            _log_call(name, len(impls))
        # Same order as pluggy: last registered first, tryfirst/trylast respected.
        for impl in reversed(impls):
            try:
                args = [kwargs[a] for a in impl.argnames]
                result = impl.function(*args)
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, self._timeout)
            except TimeoutError:
                log.warning(
                    "plugin %s: hook %s timed out after %ss", impl.plugin_name, name, self._timeout
                )
            except Exception:
                log.exception("plugin %s: hook %s raised; ignored", impl.plugin_name, name)

    def _start_thread_pass(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.create_task(self._thread_pass(), name="dispatch-hooks-thread-pass")

    async def _thread_pass(self) -> None:
        """Run the calls queued from threads, oldest first, until none is left."""
        while True:
            with self._thread_lock:
                if not self._thread_queue:
                    self._thread_pass_due = False
                    return
                name, kwargs = self._thread_queue.popleft()
            await self._call_all(name, kwargs)

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        with self._thread_lock:
            if self._thread_loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="dispatch-hooks", daemon=True
                ).start()
                self._thread_loop = loop
            return self._thread_loop
