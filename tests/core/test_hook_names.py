"""Hooks called by name fail on a name that is no hook (mypy refuses it too: the
``type: ignore`` comments below are needed), ``DISPATCH_TRACE_PLUGINS`` traces the
lifecycle hooks too, and hooks specified by a plugin do not make core's check fail (issue 17)."""

from __future__ import annotations

import logging
from typing import Any

import pluggy
import pytest

from dispatch_core import DispatchError, Engine, Job, hookimpl
from dispatch_core._plugins import Hooks, make_plugin_manager
from dispatch_core.hookspecs import LIFECYCLE_HOOKS
from dispatch_core.middleware import HandlerCrashedError
from dispatch_core.testing import capture_events


def test_emitting_a_misspelled_hook_fails_at_once() -> None:
    hooks = Hooks(make_plugin_manager(load_entrypoints=False))
    with pytest.raises(ValueError, match="unknown lifecycle hook 'dispatch_job_complete'") as err:
        hooks.emit("dispatch_job_complete", job=None, engine=None)  # type: ignore[arg-type]
    # The message lists what exists, so the fix is in sight.
    for name in LIFECYCLE_HOOKS:
        assert name in str(err.value)


def test_asking_for_a_misspelled_hook_fails_at_once() -> None:
    hooks = Hooks(make_plugin_manager(load_entrypoints=False))
    with pytest.raises(ValueError, match="unknown lifecycle hook 'dispatch_jobs_completed'"):
        hooks.wants("dispatch_jobs_completed")  # type: ignore[arg-type]
    # A registration hook is no lifecycle hook: the caller of lifecycle hooks refuses it too.
    with pytest.raises(ValueError, match="dispatch_register_stores"):
        hooks.wants("dispatch_register_stores")  # type: ignore[arg-type]


def test_a_misspelled_hook_fails_even_for_an_implemented_neighbour() -> None:
    class Plugin:
        @hookimpl
        def dispatch_job_completed(self, job: Job) -> None: ...

    engine = Engine("memory://", load_entrypoints=False, plugins=[Plugin()])
    seen: list[str] = []
    engine.hooks.add_listener(lambda name, kwargs: seen.append(name))
    assert engine.hooks.wants("dispatch_job_completed")
    with pytest.raises(ValueError, match="dispatch_job_complete'"):
        engine.hooks.emit("dispatch_job_complete", job=None, engine=engine)  # type: ignore[arg-type]
    assert seen == []  # listeners never hear of a name that is no hook


def test_known_hooks_nobody_implements_still_cost_nothing_and_never_raise() -> None:
    hooks = Hooks(make_plugin_manager(load_entrypoints=False))
    for name in LIFECYCLE_HOOKS:
        assert not hooks.wants(name)
        hooks.emit(name)  # no implementation, no listener: nothing happens


def test_capture_of_a_misspelled_event_fails() -> None:
    engine = Engine("memory://", load_entrypoints=False)
    with capture_events(engine) as events:
        assert events.of("job_failed") == []
        assert events.of("dispatch_job_failed") == []
        with pytest.raises(ValueError, match="unknown lifecycle hook 'job_faild'"):
            events.of("job_faild")


async def test_trace_env_logs_lifecycle_hook_calls(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Plugin:
        @hookimpl
        async def dispatch_job_completed(self, job: Job) -> None: ...

        @hookimpl
        def dispatch_job_started(self, job: Job) -> None: ...

    monkeypatch.setenv("DISPATCH_TRACE_PLUGINS", "1")
    with caplog.at_level(logging.DEBUG, logger="dispatch_core.plugins"):
        engine = Engine("memory://", load_entrypoints=False, plugins=[Plugin()])

        @engine.job(name="j")
        async def j() -> None: ...

        await j.aenqueue()
        await engine.drain()
    traced = [r.getMessage() for r in caplog.records if r.name == "dispatch_core.plugins"]
    assert "hook dispatch_job_started -> 1 impls" in traced
    assert "hook dispatch_job_completed -> 1 impls" in traced
    # The hooks pluggy calls are traced as before.
    assert "hook dispatch_register_jobs -> 0 impls" in traced


async def test_no_trace_without_the_env(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Plugin:
        @hookimpl
        def dispatch_job_completed(self, job: Job) -> None: ...

    monkeypatch.delenv("DISPATCH_TRACE_PLUGINS", raising=False)
    engine = Engine("memory://", load_entrypoints=False, plugins=[Plugin()])

    @engine.job(name="j")
    async def j() -> None: ...

    with caplog.at_level(logging.DEBUG, logger="dispatch_core.plugins"):
        await j.aenqueue()
        await engine.drain()
    assert not [r for r in caplog.records if r.getMessage().startswith("hook ")]


def test_a_hook_of_an_absent_plugin_is_no_misspelling() -> None:
    # dispatch_register_routes is dispatch-admin's: without it loaded, a plugin adding routes
    # still loads (its implementation is never called), as when core specified the hook.
    class Routes:
        @hookimpl
        def dispatch_register_routes(self, routes: list[Any], engine: Engine) -> None: ...

    engine = Engine("memory://", load_entrypoints=False, plugins=[Routes()])
    assert not engine.pm.hook.dispatch_register_routes.has_spec()


def test_a_plugin_adds_hookspecs_as_it_registers() -> None:
    class Specs:
        @staticmethod
        @pluggy.HookspecMarker("dispatch")
        def myplugin_widgets(widgets: list[str]) -> None:
            """Append widgets."""

    class Owner:
        @hookimpl
        def dispatch_add_hookspecs(self, pluginmanager: pluggy.PluginManager) -> None:
            pluginmanager.add_hookspecs(Specs)

    class User:
        @hookimpl
        def myplugin_widgets(self, widgets: list[str]) -> None:
            widgets.append("w")

    class Typo:
        @hookimpl
        def myplugin_widget(self, widgets: list[str]) -> None: ...

    # The implementing plugin registers before the one that specifies the hook: fine.
    engine = Engine("memory://", load_entrypoints=False, plugins=[User(), Owner()])
    widgets: list[str] = []
    engine.pm.hook.myplugin_widgets(widgets=widgets)
    assert widgets == ["w"]
    with pytest.raises(pluggy.PluginValidationError, match="myplugin_widget'"):
        Engine("memory://", load_entrypoints=False, plugins=[Owner(), Typo()])


def test_handler_crashed_error_is_a_dispatch_error() -> None:
    assert issubclass(HandlerCrashedError, DispatchError)
    assert issubclass(HandlerCrashedError, Exception)
