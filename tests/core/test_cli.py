"""The ``dispatch`` command line."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import click
import pluggy
import pytest
from click.testing import CliRunner, Result

from dispatch_core import Engine, JobState, hookimpl
from dispatch_core._plugins import make_plugin_manager
from dispatch_core.cli import cli, create_cli
from dispatch_core.cli._common import redact_url
from dispatch_core.cli._dlq import PROGRESS_THRESHOLD
from dispatch_core.cli._format import (
    DATETIME,
    DURATION,
    Column,
    format_duration,
    relative_time,
    render_table,
)

HERE = Path(__file__).parent
APP = "cliapp_memory:engine"
STATES = [s.value for s in JobState]


def _sqlite_installed() -> bool:
    try:
        importlib.import_module("dispatch_plugins.sqlite.plugin")
    except ImportError:
        return False
    return "sqlite" in Engine("memory://").stores.schemes()


needs_sqlite = pytest.mark.skipif(not _sqlite_installed(), reason="dispatch-sqlite not installed")


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DISPATCH_APP", "DISPATCH_URL", "DISPATCH_TRACEBACK", "DISPATCH_DISABLE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.syspath_prepend(str(HERE))  # sys.path is restored after each test


@pytest.fixture
def app() -> Iterator[ModuleType]:
    """``cliapp_memory`` imported afresh: a new engine and an empty memory store per test."""
    sys.modules.pop("cliapp_memory", None)
    module = importlib.import_module("cliapp_memory")
    yield module
    sys.modules.pop("cliapp_memory", None)


def run(*args: str, input: str | None = None, group: click.Group = cli) -> Result:
    """Invoke the CLI in-process; unexpected exceptions fail the test."""
    return CliRunner().invoke(group, list(args), input=input, catch_exceptions=False)


def one_error_line(result: Result) -> str:
    """The single ``Error: …`` line of a failed invocation (no traceback)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.output
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def ls_json(*args: str) -> list[dict[str, object]]:
    result = run(*args, "--json", "--app", APP)
    assert result.exit_code == 0, result.output
    data: list[dict[str, object]] = json.loads(result.stdout)
    return data


def burst() -> Result:
    result = run("worker", APP, "--burst", "--log-level", "warning")
    assert result.exit_code == 0, result.output
    return result


def failed_job(app: ModuleType) -> str:
    """Enqueue a job that fails for good, run it, return its id."""
    job_id: str = app.boom.enqueue(1).id
    burst()
    return job_id


# -- help -----------------------------------------------------------------------------------------


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    ctx = click.Context(group)
    paths = [prefix]
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None
        if isinstance(cmd, click.Group):
            paths.extend(_command_paths(cmd, (*prefix, name)))
        else:
            paths.append((*prefix, name))
    return paths


def test_every_command_is_covered() -> None:
    paths = {" ".join(p) for p in _command_paths(cli)}
    expected = {
        "", "worker", "migrate", "plugins", "jobs", "jobs ls", "jobs show", "jobs cancel",
        "jobs retry", "jobs counts", "dlq", "dlq ls", "dlq show", "dlq replay", "dlq purge",
        "workers", "cron", "cron ls", "cron show", "cron trigger", "cron enable",
        "cron disable", "cron rm", "queues", "queues ls", "queues pause", "queues resume",
        "queues set", "workflows", "workflows ls", "workflows show", "workflows cancel",
        "workflows signal", "workflows replay", "workflows migrate",
    }  # fmt: skip
    assert expected <= paths


@pytest.mark.parametrize("path", [" ".join(p) for p in _command_paths(cli)])
def test_help(path: str) -> None:
    result = run(*path.split(), "--help")
    assert result.exit_code == 0
    assert result.stdout.startswith(f"Usage: dispatch {path}".rstrip())
    assert len([ln for ln in result.stdout.splitlines() if ln.strip()]) >= 3


def test_root_help_explains_how_the_engine_is_found() -> None:
    text = run("--help").stdout
    for word in ("MODULE:ATTR", "--app", "--url", "DISPATCH_APP", "DISPATCH_URL"):
        assert word in text


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert "dispatch" in result.stdout


# -- plugins --------------------------------------------------------------------------------------


def test_plugins_lists_the_builtins() -> None:
    result = run("plugins")
    assert result.exit_code == 0
    assert "dispatch_core.builtins" in result.stdout
    assert "dispatch-core" in result.stdout
    assert "dispatch_register_stores" in result.stdout


def test_plugins_json() -> None:
    data = json.loads(run("plugins", "--json").stdout)
    builtins = next(p for p in data if p["name"] == "dispatch_core.builtins")
    assert builtins["distribution"] == "dispatch-core"
    assert builtins["version"]
    assert "dispatch_register_middleware" in builtins["hooks"]


def test_plugins_of_an_app(app: ModuleType) -> None:
    data = json.loads(run("plugins", "--json", "--app", APP).stdout)
    assert [p["name"] for p in data] == ["dispatch_core.builtins"]


class _HelloPlugin:
    @hookimpl
    def dispatch_register_commands(self, cli: click.Group) -> None:
        @cli.command()
        def hello() -> None:
            """Say hello (added by a plugin)."""
            click.echo("hello from a plugin")


def test_plugins_add_commands() -> None:
    group = create_cli(lambda: make_plugin_manager(plugins=[_HelloPlugin()]))
    assert "hello" in run("--help", group=group).stdout
    result = run("hello", group=group)
    assert result.exit_code == 0
    assert result.stdout == "hello from a plugin\n"


def test_a_broken_plugin_manager_leaves_core_commands_working() -> None:
    def broken() -> pluggy.PluginManager:
        raise ImportError("plugin xyz is broken")

    group = create_cli(broken)
    result = run("jobs", "ls", "--url", "memory://", group=group)
    assert result.exit_code == 0
    assert "Warning: plugin commands not loaded: ImportError: plugin xyz is broken" in result.stderr


def test_a_plugin_failing_to_load_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**kwargs: object) -> pluggy.PluginManager:
        raise ImportError("No module named 'dispatch_plugins.gone'")

    monkeypatch.setattr("dispatch_core.cli._admin.make_plugin_manager", broken)
    result = run("plugins")
    assert result.exit_code == 1
    assert "loading plugins failed: ImportError" in one_error_line(result)


# -- finding the engine ---------------------------------------------------------------------------


def test_bad_url_lists_installed_schemes() -> None:
    result = run("jobs", "ls", "--url", "bogus://nowhere")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "'bogus'" in line
    assert "installed schemes: " in line
    assert "memory://" in line


def test_url_without_scheme() -> None:
    result = run("dlq", "ls", "--url", "jobs.db")
    assert result.exit_code == 1
    assert "has no scheme" in one_error_line(result)


def test_known_scheme_without_its_plugin_names_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # dispatch-redis is installed in the dev environment: hide it, as if it were not.
    monkeypatch.setenv("DISPATCH_DISABLE_PLUGINS", "redis")
    result = run("jobs", "ls", "--url", "redis://localhost/0")
    assert result.exit_code == 1
    assert "pip install dispatch-redis" in one_error_line(result)


def test_missing_module() -> None:
    result = run("jobs", "ls", "--app", "nosuch.module:engine")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "nosuch.module" in line
    assert "no module named 'nosuch'" in line


def test_missing_attribute(app: ModuleType) -> None:
    result = run("jobs", "ls", "--app", "cliapp_memory:nope")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "has no attribute 'nope'" in line
    assert "Engine objects in it: engine" in line


def test_attribute_is_not_an_engine(app: ModuleType) -> None:
    result = run("worker", "cliapp_memory:other")
    assert result.exit_code == 1
    assert "cliapp_memory:other is a object, not a dispatch_core.Engine" in one_error_line(result)


def test_module_failing_at_import() -> None:
    result = run("migrate", "--app", "cliapp_broken:engine")
    assert result.exit_code == 1
    assert "RuntimeError: cliapp_broken refuses to load" in one_error_line(result)


def test_traceback_flag_shows_the_original_exception() -> None:
    result = CliRunner().invoke(cli, ["--traceback", "jobs", "ls", "--app", "cliapp_broken:x"])
    assert isinstance(result.exception, RuntimeError)


@pytest.mark.parametrize("ref", ["cliapp_memory:", "not a module", "mod:1attr", ":engine"])
def test_malformed_app_is_a_usage_error(ref: str) -> None:
    result = run("jobs", "ls", "--app", ref)
    assert result.exit_code == 2
    assert "MODULE:ATTR" in result.stderr


def test_attr_defaults_to_engine(app: ModuleType) -> None:
    app.add.enqueue(1)
    assert len(ls_json("jobs", "ls")) == 1
    result = run("jobs", "ls", "--json", "--app", "cliapp_memory")
    assert len(json.loads(result.stdout)) == 1


def test_app_and_url_together_is_a_usage_error() -> None:
    result = run("jobs", "ls", "--app", APP, "--url", "memory://")
    assert result.exit_code == 2
    assert "not both" in result.stderr


def test_dispatch_app_env(app: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    app.add.enqueue(1)
    monkeypatch.setenv("DISPATCH_APP", APP)
    monkeypatch.setenv("DISPATCH_URL", "bogus://ignored")
    result = run("jobs", "ls", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 1


def test_url_option_beats_the_app_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH_APP", "nosuch.module:engine")
    result = run("jobs", "ls", "--url", "memory://")
    assert result.exit_code == 0, result.output
    assert "No jobs found." in result.stdout


def test_dispatch_url_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH_URL", "memory://")
    result = run("dlq", "ls")
    assert result.exit_code == 0
    assert "empty" in result.stdout


def test_no_store_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH_DISABLE_PLUGINS", "sqlite")
    result = run("jobs", "ls")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "--app" in line
    assert "DISPATCH_URL" in line
    assert "memory://" in line


@needs_sqlite
def test_default_store_is_sqlite_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("migrate")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "dispatch.db").exists()


# -- migrate --------------------------------------------------------------------------------------


def test_migrate_memory_is_up_to_date() -> None:
    result = run("migrate", "--url", "memory://")
    assert result.exit_code == 0
    assert result.stdout == "Store memory:// is up to date.\n"


@needs_sqlite
def test_migrate_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    first = run("migrate", "--url", url)
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("Applied ")
    second = run("migrate", "--url", url)
    assert second.stdout == f"Store {url} is up to date.\n"


@needs_sqlite
def test_unreadable_sqlite_store_is_a_clean_error(tmp_path: Path) -> None:
    path = tmp_path / "not-a-database.db"
    path.write_bytes(b"this is not a SQLite database, " * 100)
    result = run("jobs", "ls", "--url", f"sqlite:///{path}")
    assert result.exit_code == 1
    one_error_line(result)


# -- jobs -----------------------------------------------------------------------------------------


def test_jobs_ls_empty() -> None:
    result = run("jobs", "ls", "--url", "memory://")
    assert result.exit_code == 0
    assert result.stdout == "No jobs found.\n"


def test_jobs_ls_table(app: ModuleType) -> None:
    ids = [app.add.enqueue(i).id for i in range(3)]
    failed = failed_job(app)
    result = run("jobs", "ls", "--app", APP)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "ID",
        "NAME",
        "QUEUE",
        "STATE",
        "TRIES",
        "RUN",
        "AT",
        "LAST",
        "ERROR",
    ]
    assert len(lines) == 5
    assert all(len(line) <= 100 for line in lines)
    row = next(line for line in lines if line.startswith(failed))
    assert "cliapp.boom" in row
    assert "failed" in row
    assert "1/1" in row
    assert "ValueError: boom 1" in row
    assert "second line" not in row
    assert {line.split()[0] for line in lines[2:]} | {lines[1].split()[0]} == {*ids, failed}


def test_jobs_ls_filters(app: ModuleType) -> None:
    app.add.enqueue(1)
    app.add.enqueue(2)
    failed = failed_job(app)
    assert [j["id"] for j in ls_json("jobs", "ls", "--state", "failed")] == [failed]
    assert [j["id"] for j in ls_json("jobs", "ls", "--state", "FAILED")] == [failed]
    assert [j["id"] for j in ls_json("jobs", "ls", "--queue", "errors")] == [failed]
    assert len(ls_json("jobs", "ls", "--name", "cliapp.add")) == 2
    assert len(ls_json("jobs", "ls", "--limit", "1")) == 1
    assert ls_json("jobs", "ls", "--state", "running") == []


def test_jobs_ls_pages_by_keyset(app: ModuleType) -> None:
    ids = [app.add.enqueue(i).id for i in range(5)]
    newest_first = [j["id"] for j in ls_json("jobs", "ls")]
    assert newest_first == ids[::-1]
    assert [j["id"] for j in ls_json("jobs", "ls", "--order", "asc")] == ids
    assert [j["id"] for j in ls_json("jobs", "ls", "--after", ids[3], "--limit", "2")] == [
        ids[2],
        ids[1],
    ]
    assert [j["id"] for j in ls_json("jobs", "ls", "--order", "ASC", "--after", ids[3])] == [ids[4]]


def test_jobs_ls_names_the_next_page_when_the_limit_cut_the_list(app: ModuleType) -> None:
    first, second, third = (app.add.enqueue(i).id for i in range(3))
    result = run("jobs", "ls", "--limit", "2", "--app", APP)
    assert result.stderr == f"(2 shown; next page: --after {second})\n"
    following = run("jobs", "ls", "--limit", "2", "--after", second, "--app", APP)
    assert first in following.stdout
    assert third not in following.stdout
    assert following.stderr == ""


def test_jobs_ls_json_is_complete(app: ModuleType) -> None:
    job = app.add.enqueue(41)
    (data,) = ls_json("jobs", "ls")
    assert data["id"] == job.id
    assert data["state"] == "pending"
    assert data["payload"] == 41
    assert data["max_attempts"] == 4
    assert isinstance(data["run_at"], str)
    assert datetime.fromisoformat(data["run_at"]) == job.run_at


def test_invalid_state_lists_the_valid_ones() -> None:
    result = run("jobs", "ls", "--state", "done", "--url", "memory://")
    assert result.exit_code == 2
    for state in STATES:
        assert state in result.stderr


def test_jobs_show(app: ModuleType) -> None:
    job_id = failed_job(app)
    result = run("jobs", "show", job_id, "--app", APP)
    assert result.exit_code == 0
    out = result.stdout
    for field in ("id:", "name:", "queue:", "state:", "attempt:", "run_at:", "finished_at:"):
        assert field in out
    assert job_id in out
    assert "failed" in out
    last_error = out[out.index("last_error:") :]
    assert "ValueError: boom 1" in last_error
    assert "Traceback" in last_error  # the full stored error, not just its first line


def test_jobs_show_json(app: ModuleType) -> None:
    job = app.add.enqueue(7)
    data = json.loads(run("jobs", "show", job.id, "--json", "--app", APP).stdout)
    assert data["id"] == job.id
    assert data["payload"] == 7
    assert data["last_error"] is None


def test_jobs_show_unknown_id(app: ModuleType) -> None:
    result = run("jobs", "show", "job_nope", "--app", APP)
    assert result.exit_code == 1
    assert one_error_line(result) == "Error: job 'job_nope' not found"


def test_jobs_cancel(app: ModuleType) -> None:
    job = app.add.enqueue(1)
    result = run("jobs", "cancel", job.id, "--app", APP)
    assert result.exit_code == 0
    assert job.id in result.stdout
    assert app.engine.get_job(job.id).state is JobState.CANCELLED
    assert ls_json("jobs", "ls", "--state", "cancelled")[0]["id"] == job.id


def test_cancelling_a_finished_job_is_an_error(app: ModuleType) -> None:
    job = app.add.enqueue(1)
    burst()
    result = run("jobs", "cancel", job.id, "--app", APP)
    assert result.exit_code == 1
    assert "cannot go from 'completed' to 'cancelled'" in one_error_line(result)


def test_jobs_retry(app: ModuleType) -> None:
    job_id = failed_job(app)
    result = run("jobs", "retry", job_id, "--app", APP)
    assert result.exit_code == 0
    assert "pending" in result.stdout
    job = app.engine.get_job(job_id)
    assert job.state is JobState.PENDING
    assert job.attempt == 0


def test_retrying_a_pending_job_is_an_error(app: ModuleType) -> None:
    job = app.add.enqueue(1)
    result = run("jobs", "retry", job.id, "--app", APP)
    assert result.exit_code == 1
    one_error_line(result)


def test_jobs_counts(app: ModuleType) -> None:
    app.add.enqueue(1)
    failed_job(app)
    app.add.enqueue(2)
    result = run("jobs", "counts", "--app", APP)
    assert result.exit_code == 0
    states, _, unhandled = result.stdout.partition("\n\n")
    counts = dict(line.split() for line in states.splitlines()[1:])
    assert counts == {
        "pending": "1", "running": "0", "retrying": "0", "completed": "1", "failed": "1",
        "cancelled": "0", "total": "3",
    }  # fmt: skip
    # No worker runs, so the pending job is listed as unhandled (tests/core/test_unhandled.py).
    assert unhandled.splitlines()[2].split() == ["default", "cliapp.add", "1"]
    data = json.loads(run("jobs", "counts", "--json", "--queue", "errors", "--app", APP).stdout)
    assert data.pop("unhandled") == []
    assert data["failed"] == 1
    assert sum(data.values()) == 1


# -- worker ---------------------------------------------------------------------------------------


def test_worker_burst_processes_jobs_and_exits(app: ModuleType) -> None:
    ids = [app.add.enqueue(i).id for i in range(3)]
    app.boom.enqueue(0)
    result = burst()
    banner, stats = result.stdout.splitlines()
    assert banner.startswith("Dispatch worker wkr_")
    assert "memory://" in banner
    assert "queues *" in banner
    assert "2 jobs (cliapp.add, cliapp.boom)" in banner
    assert "3 completed" in stats
    assert "1 failed" in stats
    assert all(app.engine.get_job(i).state is JobState.COMPLETED for i in ids)
    assert [app.engine.get_job(i).result for i in ids] == [1, 2, 3]


def test_worker_burst_only_takes_its_queues(app: ModuleType) -> None:
    add = app.add.enqueue(1)
    boom = app.boom.enqueue(1)
    result = run("worker", APP, "--burst", "-q", "errors,nothing", "-c", "2")
    assert result.exit_code == 0, result.output
    assert "queues errors,nothing" in result.stdout
    assert app.engine.get_job(add.id).state is JobState.PENDING
    assert app.engine.get_job(boom.id).state is JobState.FAILED


def test_worker_rejects_bad_options(app: ModuleType) -> None:
    assert run("worker", APP, "-c", "0").exit_code == 2
    assert run("worker", APP, "--lease", "0").exit_code == 2
    assert run("worker", APP, "--log-level", "loud").exit_code == 2


def test_worker_app_from_env(app: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    app.add.enqueue(1)
    monkeypatch.setenv("DISPATCH_APP", APP)
    result = run("worker", "--burst")
    assert result.exit_code == 0, result.output
    assert "1 completed" in result.stdout


def test_worker_without_app() -> None:
    result = run("worker")
    assert result.exit_code == 2
    assert "APP" in result.stderr


def test_worker_restores_signal_handlers(app: ModuleType) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    burst()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


# -- remote URLs ----------------------------------------------------------------------------------


def test_an_http_url_without_the_admin_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH_DISABLE_PLUGINS", "admin")
    result = run("jobs", "ls", "--url", "http://127.0.0.1:9/dispatch")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "http://127.0.0.1:9/dispatch is an admin API URL" in line
    assert "pip install dispatch-admin" in line


def test_an_http_dispatch_url_is_remote_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH_DISABLE_PLUGINS", "admin")
    monkeypatch.setenv("DISPATCH_URL", "https://ops.example.com/dispatch")
    result = run("dlq", "ls")
    assert "https://ops.example.com/dispatch is an admin API URL" in one_error_line(result)


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("migrate", []),
        ("cron rm", ["nightly"]),
        ("queues set", ["emails", "--concurrency", "2"]),
        ("workflows migrate", ["wfr_x", "2"]),
    ],
)
def test_store_only_commands_refuse_an_http_url(command: str, args: list[str]) -> None:
    result = run(*command.split(), *args, "--url", "http://user:secret@127.0.0.1:9/dispatch")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert f"'dispatch {command}' works on the store itself, not through the admin API" in line
    assert "secret" not in line


# -- dlq ------------------------------------------------------------------------------------------


def _dlq_ids() -> list[str]:
    return [str(e["id"]) for e in ls_json("dlq", "ls")]


def test_dlq_ls(app: ModuleType) -> None:
    job_id = failed_job(app)
    result = run("dlq", "ls", "--app", APP)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "NAME", "QUEUE", "TRIES"]
    assert lines[1].startswith("dlq_")
    assert "cliapp.boom" in lines[1]
    assert "ValueError: boom 1" in lines[1]
    assert all(len(line) <= 100 for line in lines)
    (entry,) = ls_json("dlq", "ls")
    assert entry["job_id"] == job_id
    assert entry["replayed_at"] is None
    assert ls_json("dlq", "ls", "--queue", "default") == []


def test_dlq_ls_pages_by_keyset(app: ModuleType) -> None:
    for i in range(3):
        app.boom.enqueue(i)
    burst()
    oldest_first = _dlq_ids()
    assert len(oldest_first) == 3
    newest_first = [e["id"] for e in ls_json("dlq", "ls", "--order", "desc")]
    assert newest_first == oldest_first[::-1]
    after = [e["id"] for e in ls_json("dlq", "ls", "--after", oldest_first[0], "--limit", "1")]
    assert after == [oldest_first[1]]
    assert ls_json("dlq", "ls", "--name", "cliapp.add") == []
    result = run("dlq", "ls", "--limit", "2", "--app", APP)
    assert result.stderr == f"(2 shown; next page: --after {oldest_first[1]})\n"


def test_dlq_ls_empty() -> None:
    result = run("dlq", "ls", "--url", "memory://")
    assert result.stdout == "The dead-letter queue is empty.\n"


def test_dlq_show(app: ModuleType) -> None:
    failed_job(app)
    (entry_id,) = _dlq_ids()
    result = run("dlq", "show", entry_id, "--app", APP)
    assert result.exit_code == 0
    assert entry_id in result.stdout
    assert "second line" in result.stdout  # the full error
    data = json.loads(run("dlq", "show", entry_id, "--json", "--app", APP).stdout)
    assert data["id"] == entry_id
    assert data["payload"] == 1


def test_dlq_show_unknown() -> None:
    result = run("dlq", "show", "dlq_nope", "--url", "memory://")
    assert result.exit_code == 1
    assert one_error_line(result) == "Error: dead-letter entry 'dlq_nope' not found"


def test_dlq_replay_by_id(app: ModuleType) -> None:
    failed_job(app)
    (entry_id,) = _dlq_ids()
    result = run("dlq", "replay", entry_id, "--app", APP)
    assert result.exit_code == 0, result.output
    new_job_id = result.stdout.split(" as ")[1].split(".")[0]
    assert app.engine.get_job(new_job_id).state is JobState.PENDING
    (entry,) = ls_json("dlq", "ls")
    assert entry["replay_job_id"] == new_job_id


def test_dlq_replay_reports_failures(app: ModuleType) -> None:
    failed_job(app)
    (entry_id,) = _dlq_ids()
    result = run("dlq", "replay", entry_id, "dlq_nope", "--app", APP)
    assert result.exit_code == 1
    assert "Replayed 1 entry." in result.stdout
    assert "Error: dead-letter entry 'dlq_nope' not found" in result.stderr
    assert "Error: 1 of 2 replays failed" in result.stderr


def test_dlq_replay_all_with_progress_bar(app: ModuleType) -> None:
    count = PROGRESS_THRESHOLD + 2
    for i in range(count):
        app.boom.enqueue(i)
    burst()
    result = run("dlq", "replay", "--all", "--app", APP)
    assert result.exit_code == 0, result.output
    assert f"Replayed {count} entries." in result.stdout
    assert "Replaying dead-letter entries" in result.stderr
    assert len(ls_json("jobs", "ls", "--state", "pending")) == count
    again = run("dlq", "replay", "--all", "--app", APP)
    assert "Nothing to replay" in again.stdout


def test_dlq_replay_all_of_a_queue(app: ModuleType) -> None:
    failed_job(app)
    result = run("dlq", "replay", "--all", "--queue", "default", "--app", APP)
    assert "Nothing to replay" in result.stdout
    result = run("dlq", "replay", "--all", "--queue", "errors", "--app", APP)
    assert "Replayed dlq_" in result.stdout


@pytest.mark.parametrize(
    "args",
    [[], ["dlq_x", "--all"], ["dlq_x", "--queue", "errors"]],
    ids=["nothing", "ids-and-all", "queue-without-all"],
)
def test_dlq_replay_usage_errors(args: list[str]) -> None:
    result = run("dlq", "replay", *args, "--url", "memory://")
    assert result.exit_code == 2


def test_dlq_purge_older_than_keeps_recent_entries(app: ModuleType) -> None:
    failed_job(app)
    result = run("dlq", "purge", "--older-than", "30d", "--yes", "--app", APP)
    assert result.exit_code == 0
    assert result.stdout == "Purged 0 dead-letter entries.\n"
    assert len(_dlq_ids()) == 1


def test_dlq_purge_all(app: ModuleType) -> None:
    failed_job(app)
    failed_job(app)
    result = run("dlq", "purge", "--all", "--yes", "--app", APP)
    assert result.exit_code == 0
    assert result.stdout == "Purged 2 dead-letter entries.\n"
    assert _dlq_ids() == []


def test_dlq_purge_before(app: ModuleType) -> None:
    failed_job(app)
    past = run("dlq", "purge", "--before", "2000-01-01", "--yes", "--app", APP)
    assert past.stdout == "Purged 0 dead-letter entries.\n"
    future = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    result = run("dlq", "purge", "--before", future, "--yes", "--app", APP)
    assert result.stdout == "Purged 1 dead-letter entry.\n"


def test_dlq_purge_in_batches_shows_progress(app: ModuleType) -> None:
    for i in range(7):
        app.boom.enqueue(i)
    burst()
    result = run("dlq", "purge", "--all", "--yes", "--batch-size", "3", "--app", APP)
    assert result.exit_code == 0, result.output
    assert result.stdout == "Purged 7 dead-letter entries.\n"
    assert "Purging dead-letter entries" in result.stderr
    assert _dlq_ids() == []


def test_dlq_purge_of_one_batch_shows_no_bar(app: ModuleType) -> None:
    failed_job(app)
    result = run("dlq", "purge", "--all", "--yes", "--batch-size", "3", "--app", APP)
    assert result.stdout == "Purged 1 dead-letter entry.\n"
    assert result.stderr == ""


def test_dlq_purge_of_a_queue(app: ModuleType) -> None:
    failed_job(app)
    other = run("dlq", "purge", "--all", "--queue", "default", "--app", APP, input="y\n")
    assert "Delete every entry of queue 'default'" in other.stdout
    assert "Purged 0 dead-letter entries." in other.stdout
    result = run("dlq", "purge", "--all", "--queue", "errors", "--yes", "--app", APP)
    assert result.stdout == "Purged 1 dead-letter entry.\n"


def test_dlq_purge_asks_for_confirmation(app: ModuleType) -> None:
    failed_job(app)
    refused = run("dlq", "purge", "--all", "--app", APP, input="n\n")
    assert refused.exit_code == 1
    assert "Delete every entry" in refused.stdout
    assert len(_dlq_ids()) == 1
    accepted = run("dlq", "purge", "--all", "--app", APP, input="y\n")
    assert accepted.exit_code == 0
    assert "Purged 1 dead-letter entry." in accepted.stdout


@pytest.mark.parametrize(
    "args",
    [[], ["--all", "--older-than", "1d"], ["--before", "2024-01-01", "--all"]],
    ids=["none", "all-and-older-than", "before-and-all"],
)
def test_dlq_purge_needs_exactly_one_cutoff(args: list[str]) -> None:
    result = run("dlq", "purge", *args, "--yes", "--url", "memory://")
    assert result.exit_code == 2
    assert "exactly one of --older-than" in result.stderr


@pytest.mark.parametrize("value", ["30", "d", "1.5h", "-1d", "0s", "3y"])
def test_dlq_purge_rejects_bad_durations(value: str) -> None:
    result = run("dlq", "purge", "--older-than", value, "--yes", "--url", "memory://")
    assert result.exit_code == 2
    assert "duration" in result.stderr


def test_dlq_purge_rejects_bad_dates() -> None:
    result = run("dlq", "purge", "--before", "yesterday", "--yes", "--url", "memory://")
    assert result.exit_code == 2
    assert "ISO 8601" in result.stderr


# -- formatting units -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45), ("1d12h", 129600),
     ("2w", 1209600), (" 1H ", 3600)],
)  # fmt: skip
def test_duration_parsing(text: str, seconds: int) -> None:
    assert DURATION.convert(text, None, None) == timedelta(seconds=seconds)


def test_duration_formatting() -> None:
    assert format_duration(timedelta(minutes=90)) == "1h30m"
    assert format_duration(timedelta(days=30)) == "30d"


def test_datetime_parsing() -> None:
    assert DATETIME.convert("2024-05-01", None, None) == datetime(2024, 5, 1, tzinfo=UTC)
    aware = DATETIME.convert("2024-05-01T12:00:00+02:00", None, None)
    assert aware == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert DATETIME.convert("2024-05-01T12:00:00Z", None, None).tzinfo is not None


def test_relative_time() -> None:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    assert relative_time(now, now) == "now"
    assert relative_time(now + timedelta(seconds=90), now) == "in 1m"
    assert relative_time(now - timedelta(hours=5), now) == "5h ago"
    assert relative_time(None, now) == "-"


def test_table_shrinks_to_width() -> None:
    columns = [
        Column("id"),
        Column("name", shrink=2, min_width=6, elide="left"),
        Column("error", shrink=1, min_width=10),
    ]
    rows = [["x" * 30, "package.module.function_name", "E" * 80]]
    lines = render_table(columns, rows, width=60)
    assert all(len(line) <= 60 for line in lines)
    assert "...function_name" in lines[1] or "..." in lines[1]
    assert render_table(columns, [["a", "b", "c"]], width=60)[1] == "a   b     c"


def test_redact_url() -> None:
    assert redact_url("postgresql://bob:s3cret@db:5432/app") == "postgresql://bob:***@db:5432/app"
    assert redact_url("sqlite:///jobs.db") == "sqlite:///jobs.db"


# -- the real process: signals --------------------------------------------------------------------


def _dispatch_command() -> list[str]:
    script = shutil.which("dispatch", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "dispatch_core.cli"]


def _start_worker(
    tmp_path: Path, url: str, seconds: float, *extra: str
) -> tuple[subprocess.Popen[str], Path]:
    marker = tmp_path / "started"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    env |= {"DISPATCH_URL": url, "CLIAPP_ENQUEUE": str(seconds), "CLIAPP_MARKER": str(marker)}
    proc = subprocess.Popen(
        [*_dispatch_command(), "worker", "cliapp_worker:engine", "--poll-interval", "0.1", *extra],
        cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the job never started\nstdout: {out}\nstderr: {err}")
        time.sleep(0.05)
    return proc, marker


def _stop(proc: subprocess.Popen[str], *signals: signal.Signals) -> tuple[str, str]:
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.2)
    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the worker did not stop\nstdout: {out}\nstderr: {err}")


@pytest.mark.slow
def test_sigterm_stops_the_worker_gracefully(tmp_path: Path) -> None:
    proc, _ = _start_worker(tmp_path, "memory://", 1.0)
    out, err = _stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, err
    assert out.startswith("Dispatch worker wkr_")
    assert "1 completed" in out  # the running job was allowed to finish
    assert "SIGTERM: stopping" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_second_signal_stops_the_worker_at_once(tmp_path: Path) -> None:
    proc, _ = _start_worker(tmp_path, "memory://", 60.0)
    started = time.monotonic()
    out, err = _stop(proc, signal.SIGINT, signal.SIGINT)
    assert time.monotonic() - started < 20
    assert proc.returncode == 0, err
    assert "0 completed" in out
    assert "1 released" in out  # put back without consuming an attempt
    assert "stopping now" in err


@pytest.mark.slow
@needs_sqlite
def test_sigterm_stops_a_sqlite_worker_gracefully(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    assert run("migrate", "--url", url).exit_code == 0
    proc, _ = _start_worker(tmp_path, url, 0.5)
    out, err = _stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, err
    assert "1 completed" in out
    (job,) = json.loads(run("jobs", "ls", "--json", "--url", url).stdout)
    assert job["state"] == "completed"
    assert job["result"] == "done"
