"""The plugin's shape: the entry-point default, an explicit instance replacing it, the
switches, and the API alone (no SDK)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from _otel_helpers import Telemetry, make_engine

import dispatch_plugins.otel.plugin as entry_point
from dispatch_core import Engine
from dispatch_core.stores import MemoryStore
from dispatch_plugins.otel import OTel


def run_python(code: str, **env: str) -> str:
    import os

    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_installing_the_distribution_registers_the_default() -> None:
    engine = Engine(MemoryStore())
    assert engine.pm.get_plugin("otel") is entry_point
    assert isinstance(entry_point.DEFAULT, OTel)
    assert engine.middleware.names().count("otel") == 1
    names = [impl.plugin_name for impl in engine.pm.hook.dispatch_job_enqueuing.get_hookimpls()]
    assert names == ["otel"]


async def test_an_explicit_instance_replaces_the_default(telemetry: Telemetry) -> None:
    engine = Engine(MemoryStore(), plugins=[telemetry.otel])  # entry points loaded too
    assert engine.pm.get_plugin("otel") is telemetry.otel
    assert not engine.pm.is_registered(entry_point)
    assert engine.middleware.names().count("otel") == 1
    for hook in ("dispatch_job_enqueuing", "dispatch_job_enqueued", "dispatch_job_failed"):
        impls = getattr(engine.pm.hook, hook).get_hookimpls()
        assert [i.plugin for i in impls if i.plugin_name == "otel"] == [telemetry.otel]
        assert not [i for i in impls if i.plugin is entry_point]

    @engine.job(name="once")
    async def once() -> None:
        return None

    async with engine:
        await once.aenqueue()
        await engine.drain()
        await engine.hooks.flush()
    assert len(telemetry.spans("send default")) == 1
    assert len(telemetry.spans("process default")) == 1
    assert telemetry.value("dispatch.jobs.enqueued") == 1
    assert telemetry.value("dispatch.jobs.completed") == 1


def test_halves_that_are_off_implement_no_hooks() -> None:
    traces_only = OTel(metrics=False)
    metrics_only = OTel(traces=False)
    assert set(traces_only.hook_functions()) == {
        "dispatch_register_middleware",
        "dispatch_job_enqueuing",
    }
    assert "dispatch_job_enqueuing" not in metrics_only.hook_functions()
    assert "dispatch_job_failed" in metrics_only.hook_functions()
    engine = Engine(MemoryStore(), load_entrypoints=False, plugins=[OTel(metrics=False)])
    assert not engine.hooks.wants("dispatch_job_enqueued")
    nothing = Engine(
        MemoryStore(), load_entrypoints=False, plugins=[OTel(traces=False, metrics=False)]
    )
    assert "otel" not in nothing.middleware.names()
    assert not nothing.pm.hook.dispatch_job_enqueuing.get_hookimpls()


async def test_traces_off_still_measures(telemetry: Telemetry) -> None:
    tel = Telemetry(
        telemetry.exporter,
        telemetry.reader,
        telemetry.tracer_provider,
        telemetry.meter_provider,
        OTel(meter_provider=telemetry.meter_provider, traces=False),
    )
    engine = make_engine(tel)

    @engine.job(name="quiet")
    async def quiet() -> None:
        return None

    async with engine:
        job = await quiet.aenqueue()
        await engine.drain()
    assert tel.spans() == []
    assert "traceparent" not in job.headers
    assert tel.value("dispatch.jobs.completed", dispatch__job__name="quiet") == 1


def test_disabled_by_the_environment() -> None:
    out = run_python(
        """
        import json
        import dispatch_plugins.otel.plugin as p
        from dispatch_core import Engine
        engine = Engine("memory://")
        hooks = sorted(i.plugin_name for i in engine.pm.hook.dispatch_job_enqueuing.get_hookimpls())
        print(json.dumps({
            "default": p.DEFAULT is None,
            "registered": engine.pm.get_plugin("otel") is p,
            "middleware": engine.middleware.names(),
            "enqueuing": hooks,
            "lifecycle": engine.hooks.wants("dispatch_job_failed"),
        }))
        """,
        DISPATCH_OTEL_DISABLED="1",
    )
    found = json.loads(out)
    assert found["default"] is True
    assert found["registered"] is True  # registered, but with nothing to call
    assert "otel" not in found["middleware"]
    assert "otel" not in found["enqueuing"]
    assert found["lifecycle"] is False


def test_the_api_alone_is_a_quiet_no_op() -> None:
    # A fresh interpreter: no global provider was ever set there.
    out = run_python(
        """
        import asyncio, json
        import dispatch_plugins.otel.plugin as p
        from dispatch_core import Engine

        engine = Engine("memory://")

        @engine.job(name="hello")
        async def hello(n: int) -> int:
            return n

        async def main():
            async with engine:
                job = await hello.aenqueue(1)
                stats = await engine.drain()
                return job, stats

        job, stats = asyncio.run(main())
        print(json.dumps({
            "completed": stats.completed,
            "headers": job.headers,
            "traces_live": p.DEFAULT.tracing.live(),
            "metrics_live": p.DEFAULT.metrics.live(),
        }))
        """
    )
    assert json.loads(out) == {
        "completed": 1,
        "headers": {},
        "traces_live": False,
        "metrics_live": False,
    }
