"""Default job and workflow names: a script's ``__main__`` is named as a worker imports it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dispatch_core import Engine
from dispatch_core._naming import default_name, importable_module_name
from dispatch_core.stores import MemoryStore

# -- the rule, on a stand-in __main__ --------------------------------------------------------------


def _fake_main(
    monkeypatch: pytest.MonkeyPatch,
    *,
    file: str | None = None,
    spec_name: str | None = None,
    key: str = "__main__",
) -> None:
    main = types.ModuleType("__main__")
    if file is not None:
        main.__file__ = file
    main.__spec__ = (
        types.SimpleNamespace(name=spec_name) if spec_name is not None else None  # type: ignore[assignment]
    )
    monkeypatch.setitem(sys.modules, key, main)


def _handler(module: str) -> Callable[..., Any]:
    def send_welcome() -> None: ...

    send_welcome.__module__ = module
    send_welcome.__qualname__ = "send_welcome"  # as if defined at the module's top level
    return send_welcome


def test_a_script_under_the_cwd_is_named_by_its_relative_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    _fake_main(monkeypatch, file=str(tmp_path / "myapp.py"))
    assert importable_module_name("__main__") == "myapp"
    _fake_main(monkeypatch, file="app/tasks.py")  # relative, as `python app/tasks.py` sets it
    assert importable_module_name("__main__") == "app.tasks"
    assert default_name(_handler("__main__")) == "app.tasks.send_welcome"


def test_python_dash_m_uses_the_spec_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    _fake_main(monkeypatch, file=str(tmp_path / "pkg" / "mod.py"), spec_name="pkg.mod")
    assert importable_module_name("__main__") == "pkg.mod"
    # `python somedir/` (a __main__.py run from a directory) has the spec name __main__
    _fake_main(monkeypatch, file=str(tmp_path / "tool" / "__main__.py"), spec_name="__main__")
    assert importable_module_name("__main__") == "tool.__main__"


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("my-scripts/tasks.py", "tasks"),  # a part that is not an identifier
        ("2024/jobs.py", "jobs"),
    ],
)
def test_a_path_that_is_not_a_module_path_falls_back_to_the_stem(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, relative: str, expected: str
) -> None:
    monkeypatch.chdir(tmp_path)
    _fake_main(monkeypatch, file=str(tmp_path / relative))
    assert importable_module_name("__main__") == expected


def test_a_script_outside_the_cwd_is_named_by_its_stem(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    _fake_main(monkeypatch, file=str(tmp_path / "elsewhere" / "worker_jobs.py"))
    assert importable_module_name("__main__") == "worker_jobs"


def test_no_file_keeps_main(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_main(monkeypatch)  # the REPL, python -c
    assert importable_module_name("__main__") == "__main__"
    assert default_name(_handler("__main__")) == "__main__.send_welcome"


def test_multiprocessing_spawn_main_is_named_like_the_parent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    _fake_main(monkeypatch, file=str(tmp_path / "myapp.py"), key="__mp_main__")
    assert importable_module_name("__mp_main__") == "myapp"


def test_other_modules_and_explicit_names_are_untouched(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    _fake_main(monkeypatch, file=str(tmp_path / "myapp.py"))
    assert importable_module_name("app.tasks") == "app.tasks"
    engine = Engine(MemoryStore(), load_entrypoints=False)
    handler = _handler("__main__")
    assert engine.job(handler).name == "myapp.send_welcome"
    assert engine.job(name="__main__.kept")(_handler("__main__")).name == "__main__.kept"
    assert engine.workflow(name="wf.kept")(_workflow("__main__")).name == "wf.kept"
    assert engine.workflow()(_workflow("__main__")).name == "myapp.onboard"


def _workflow(module: str) -> Callable[..., Any]:
    async def onboard(wf: Any, n: int) -> None: ...

    onboard.__module__ = module
    onboard.__qualname__ = "onboard"
    return onboard


# -- the rule, in real processes -------------------------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import json
    from dispatch_core import Engine

    engine = Engine("memory://", load_entrypoints=False)

    @engine.job(queue="emails")
    async def send_welcome(n: int) -> int:
        return n + 1

    @engine.workflow()
    async def onboard(wf, n: int) -> None: ...

    @engine.cron("0 3 * * *")
    async def nightly() -> None: ...

    @engine.job(name="explicit.name")
    async def other(n: int) -> None: ...

    def names():
        return {
            "job": send_welcome.name,
            "workflow": onboard.name,
            "cron": sorted(engine.cron_specs),
            "cron_job": nightly.name,
            "explicit": other.name,
        }

    if __name__ == "__main__":
        import asyncio

        async def main():
            job = await send_welcome.aenqueue(1)
            await engine.drain()
            return (await engine.aget_job(job.id)).result

        print(json.dumps({**names(), "result": asyncio.run(main())}))
    """
)


def _python(*args: str, cwd: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return data


def _imported(module: str, cwd: Path) -> dict[str, Any]:
    """The names a worker importing ``module`` registers."""
    return _python("-c", f"import json, {module} as m; print(json.dumps(m.names()))", cwd=cwd)


@pytest.mark.parametrize(
    ("path", "module", "run"),
    [
        ("myapp.py", "myapp", ["myapp.py"]),
        ("app/tasks.py", "app.tasks", ["app/tasks.py"]),
        ("app/tasks.py", "app.tasks", ["-m", "app.tasks"]),
    ],
    ids=["python myapp.py", "python app/tasks.py", "python -m app.tasks"],
)
def test_a_script_names_its_jobs_as_a_worker_importing_it_does(
    tmp_path: Path, path: str, module: str, run: list[str]
) -> None:
    (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / path).write_text(SCRIPT)
    as_script = _python(*run, cwd=tmp_path)
    assert as_script.pop("result") == 2  # enqueued and drained in-process
    assert as_script == _imported(module, tmp_path)
    assert as_script == {
        "job": f"{module}.send_welcome",
        "workflow": f"{module}.onboard",
        "cron": [f"{module}.nightly"],
        "cron_job": f"{module}.nightly",
        "explicit": "explicit.name",
    }


def test_python_dash_c_keeps_main_and_drains_in_process(tmp_path: Path) -> None:
    got = _python("-c", SCRIPT.replace('if __name__ == "__main__":', "if True:"), cwd=tmp_path)
    assert got["job"] == "__main__.send_welcome"
    assert got["cron"] == ["__main__.nightly"]
    assert got["result"] == 2
