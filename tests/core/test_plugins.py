"""The plugin system: hookspecs, the per-engine manager, and the out-of-band hook caller."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pluggy
import pytest

from dispatch_core import Constant, Engine, Job, JobContext, StoreURLError, hookimpl
from dispatch_core._plugins import list_plugins, make_plugin_manager
from dispatch_core.hookspecs import LIFECYCLE_HOOKS
from dispatch_core.middleware import CallNext
from dispatch_core.stores import MemoryStore


def test_every_go_extension_event_has_a_hook() -> None:
    go_events = [
        "job_enqueued",
        "job_started",
        "job_completed",
        "job_failed",
        "job_retrying",
        "job_dead_lettered",
        "workflow_started",
        "workflow_step_completed",
        "workflow_step_failed",
        "workflow_completed",
        "workflow_failed",
        "cron_fired",
        "engine_shutdown",
    ]
    assert len(go_events) == 13
    for event in [*go_events, "engine_started"]:
        assert f"dispatch_{event}" in LIFECYCLE_HOOKS
    pm = make_plugin_manager(load_entrypoints=False)
    for name in [
        *LIFECYCLE_HOOKS,
        "dispatch_register_stores",
        "dispatch_register_middleware",
        "dispatch_configure_converter",
        "dispatch_register_commands",
        "dispatch_register_jobs",
        "dispatch_add_hookspecs",
        "dispatch_remote_operations",
    ]:
        assert hasattr(pm.hook, name)
    # dispatch-admin specifies the hook it calls itself (tests/plugins/admin/test_hookspecs.py).
    assert not hasattr(pm.hook, "dispatch_register_routes")


def test_managers_are_per_engine() -> None:
    a = Engine("memory://", load_entrypoints=False)
    b = Engine("memory://", load_entrypoints=False)
    assert a.pm is not b.pm


def test_misspelled_hook_fails_fast() -> None:
    class Typo:
        @hookimpl
        def dispatch_job_complete(self, job: Job) -> None: ...

    with pytest.raises(pluggy.PluginValidationError, match="dispatch_job_complete"):
        Engine("memory://", load_entrypoints=False, plugins=[Typo()])


def test_disable_plugins_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH_DISABLE_PLUGINS", "dispatch_core.builtins")
    pm = make_plugin_manager(load_entrypoints=False)
    assert pm.is_blocked("dispatch_core.builtins")
    assert "dispatch_core.builtins" not in [i.name for i in list_plugins(pm)]
    with pytest.raises(StoreURLError, match="installed schemes: none"):
        Engine("memory://", load_entrypoints=False)


def test_list_plugins_names_the_builtins() -> None:
    infos = {i.name: i for i in list_plugins(make_plugin_manager(load_entrypoints=False))}
    builtin = infos["dispatch_core.builtins"]
    assert builtin.distribution == "dispatch-core"
    assert "dispatch_register_stores" in builtin.hooks


def test_user_store_plugin_overrides_a_builtin_scheme() -> None:
    class MyMemory(MemoryStore):
        pass

    class Plugin:
        @hookimpl
        def dispatch_register_stores(self, registry: Any) -> None:
            registry.add("memory", MyMemory)

    engine = Engine("memory://", load_entrypoints=False, plugins=[Plugin()])
    assert type(engine.store) is MyMemory


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    @hookimpl
    def dispatch_job_enqueued(self, job: Job) -> None:
        self.calls.append(("enqueued", job.name))

    @hookimpl
    async def dispatch_job_completed(self, job: Job, elapsed: float, engine: Engine) -> None:
        await asyncio.sleep(0)
        assert elapsed >= 0
        assert isinstance(engine, Engine)
        self.calls.append(("completed", job.name))

    @hookimpl
    def dispatch_engine_started(self, engine: Engine) -> None:
        self.calls.append(("started", "engine"))


async def test_sync_and_async_hook_impls_are_called() -> None:
    rec = Recorder()
    engine = Engine("memory://", load_entrypoints=False, plugins=[rec])

    @engine.job(name="j")
    async def j() -> None: ...

    await j.aenqueue()
    await engine.drain()
    assert rec.calls == [("started", "engine"), ("enqueued", "j"), ("completed", "j")]


async def test_failing_and_slow_hooks_never_fail_or_block_a_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        @hookimpl
        def dispatch_job_started(self, job: Job) -> None:
            raise RuntimeError("plugin bug")

        @hookimpl
        async def dispatch_job_completed(self, job: Job) -> None:
            await asyncio.sleep(30)

    rec = Recorder()
    engine = Engine(
        "memory://",
        load_entrypoints=False,
        plugins=[Broken(), rec],
        hook_timeout=0.2,
        backoff=Constant(interval=0),
    )
    ran: list[str] = []

    @engine.job(name="j")
    async def j(ctx: JobContext) -> None:
        ran.append(ctx.id)

    job = await j.aenqueue()
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="dispatch_core.plugins"):
        result = await engine.drain()
    assert time.monotonic() - t0 < 5
    assert result.completed == 1
    assert ran == [job.id]
    assert ("completed", "j") in rec.calls  # the well-behaved plugin still ran
    assert "hook dispatch_job_started raised" in caplog.text
    assert "timed out" in caplog.text


async def test_middleware_order_and_user_middleware() -> None:
    trail: list[str] = []

    async def outer(ctx: JobContext, call_next: CallNext) -> Any:
        trail.append("user-before")
        result = await call_next(ctx)
        trail.append("user-after")
        return result

    engine = Engine("memory://", load_entrypoints=False, middleware=[outer])
    assert engine.middleware.names() == ["recover", "logging", "scope", "timeout", "user.0"]

    @engine.job(name="j")
    async def j() -> str:
        trail.append("handler")
        return "r"

    job = await j.aenqueue()
    await engine.drain()
    assert trail == ["user-before", "handler", "user-after"]
    assert (await engine.aget_job(job.id)).result == "r"


def test_hook_from_sync_code_runs_in_the_background() -> None:
    rec = Recorder()
    engine = Engine("memory://", load_entrypoints=False, plugins=[rec])

    @engine.job(name="j")
    async def j() -> None: ...

    j.enqueue()
    deadline = time.monotonic() + 5
    while ("enqueued", "j") not in rec.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ("enqueued", "j") in rec.calls


def test_builtins_fuse_only_when_nothing_sits_between_them() -> None:
    from dispatch_core.middleware import TRACING, builtin_middleware

    plain = Engine("memory://", load_entrypoints=False)
    assert plain.middleware.for_chain() == [builtin_middleware]

    async def tracing(ctx: JobContext, call_next: CallNext) -> Any:
        return await call_next(ctx)

    class Tracer:
        @hookimpl
        def dispatch_register_middleware(self, registry: Any) -> None:
            registry.add("tracing", tracing, order=TRACING)

    traced = Engine("memory://", load_entrypoints=False, plugins=[Tracer()])
    assert traced.middleware.names() == ["recover", "tracing", "logging", "scope", "timeout"]
    assert builtin_middleware not in traced.middleware.for_chain()
    assert len(traced.middleware.for_chain()) == 5


async def test_separate_builtins_behave_like_the_fused_ones() -> None:
    from dispatch_core.middleware import TRACING

    seen: list[str] = []

    async def tracing(ctx: JobContext, call_next: CallNext) -> Any:
        seen.append(ctx.name)
        return await call_next(ctx)

    class Tracer:
        @hookimpl
        def dispatch_register_middleware(self, registry: Any) -> None:
            registry.add("tracing", tracing, order=TRACING)

    engine = Engine(
        "memory://", load_entrypoints=False, plugins=[Tracer()], backoff=Constant(interval=0)
    )

    @engine.job(name="slow", timeout=0.1, max_retries=0)
    async def slow() -> None:
        await asyncio.sleep(10)

    @engine.job(name="exits", max_retries=0)
    async def exits() -> None:
        raise SystemExit(1)

    await slow.aenqueue()
    await exits.aenqueue()
    result = await engine.drain()
    assert result.failed == 2
    errors = sorted(e.error.splitlines()[0] for e in await engine.alist_dlq())
    assert errors[0].startswith("HandlerCrashedError")
    assert errors[1].startswith("JobTimeoutError: job slow timed out after 0.1s")
    assert sorted(seen) == ["exits", "slow"]
