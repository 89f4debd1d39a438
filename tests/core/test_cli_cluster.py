"""``dispatch workers``, ``dispatch cron …``, ``dispatch queues …`` and the cluster flags of
``dispatch worker``."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import click
import pytest
from click.testing import CliRunner, Result

from dispatch_core import Engine, WorkerInfo, WorkerState
from dispatch_core._ids import new_id
from dispatch_core.cli import cli
from dispatch_core.cli._common import run_with_engine
from dispatch_core.cli._workers import short_host, worker_status
from dispatch_core.cron import CronEntry
from dispatch_core.models import utcnow
from dispatch_core.queues import QueueConfig

HERE = Path(__file__).parent
APP = "cliapp_cluster:engine"
T = TypeVar("T")


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
    """``cliapp_cluster`` imported afresh, its declarations written to its new memory store
    (as a starting worker writes them)."""
    sys.modules.pop("cliapp_cluster", None)
    module = importlib.import_module("cliapp_cluster")
    on_store(module, lambda e: e.apply_schedules())
    yield module
    sys.modules.pop("cliapp_cluster", None)


def on_engine(engine: Engine, fn: Callable[[Engine], Coroutine[Any, Any, T]]) -> T:
    """Run ``fn(engine)`` on the opened engine, as a CLI command would (then close it)."""

    async def opened(e: Engine) -> T:
        await e.aopen()
        return await fn(e)

    return run_with_engine(engine, opened)


def on_store(app: ModuleType, fn: Callable[[Engine], Coroutine[Any, Any, T]]) -> T:
    """Run ``fn(engine)`` on the app's engine (see :func:`on_engine`)."""
    return on_engine(app.engine, fn)


def run(*args: str, input: str | None = None, group: click.Group = cli) -> Result:
    """Invoke the CLI in-process; unexpected exceptions fail the test."""
    return CliRunner().invoke(group, list(args), input=input, catch_exceptions=False)


def ok(*args: str) -> Result:
    """Invoke ``args`` with ``--app APP``; assert success."""
    result = run(*args, "--app", APP)
    assert result.exit_code == 0, result.output
    return result


def as_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json").stdout)


def one_error_line(result: Result) -> str:
    """The single ``Error: …`` line of a failed invocation (no traceback)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.output
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def table(result: Result, width: int = 100) -> list[list[str]]:
    """The rows of a printed table (after the header), split on whitespace."""
    lines = result.stdout.splitlines()
    assert all(len(line) <= width for line in lines), result.stdout
    return [line.split() for line in lines[1:]]


def row_of(result: Result, key: str) -> list[str]:
    """The table line that contains ``key``, split on whitespace (not the leader line)."""
    lines = [ln for ln in result.stdout.splitlines() if "leader" not in ln.lower()]
    (line,) = [ln for ln in lines if key in ln.split()]
    return line.split()


# -- workers --------------------------------------------------------------------------------------


def worker_row(
    *,
    state: WorkerState = WorkerState.RUNNING,
    seen_ago: float = 1.0,
    host: str = "web-1",
    pid: int = 101,
    queues: tuple[str, ...] | None = None,
    started_ago: float = 3600.0,
) -> WorkerInfo:
    now = utcnow()
    return WorkerInfo(
        id=new_id("wkr"),
        hostname=host,
        pid=pid,
        queues=queues,
        concurrency=10,
        version="0.1.0",
        started_at=now - timedelta(seconds=started_ago),
        last_seen=now - timedelta(seconds=seen_ago),
        state=state,
    )


def register(app: ModuleType, *rows: WorkerInfo) -> None:
    async def write(e: Engine) -> None:
        for row in rows:
            await e.store.register_worker(row)

    on_store(app, write)


def lead(app: ModuleType, worker_id: str, *, ttl: float = 30.0, at: datetime | None = None) -> None:
    async def acquire(e: Engine) -> None:
        when = at or utcnow()
        assert await e.store.acquire_leadership(worker_id=worker_id, ttl=ttl, now=when)

    on_store(app, acquire)


@pytest.fixture
def cluster(app: ModuleType) -> dict[str, WorkerInfo]:
    """Four workers: a fresh leader, a silent one still marked running, a dead and a stopped."""
    rows = {
        "leader": worker_row(host="web-1.prod.example.com", pid=101, started_ago=7200),
        "silent": worker_row(seen_ago=60, host="web-2", pid=102, queues=("emails",)),
        "dead": worker_row(state=WorkerState.DEAD, seen_ago=300, host="web-3", pid=103),
        "stopped": worker_row(state=WorkerState.STOPPED, seen_ago=900, host="web-4", pid=104),
    }
    register(app, *rows.values())
    lead(app, rows["leader"].id)
    return rows


def test_workers_table(cluster: dict[str, WorkerInfo]) -> None:
    result = ok("workers")
    leader, silent, dead = cluster["leader"], cluster["silent"], cluster["dead"]
    assert result.stdout.splitlines()[0].split() == [
        "ID", "HOST", "PID", "STATE", "QUEUES", "CONC", "VERSION", "STARTED", "SEEN",
    ]  # fmt: skip
    rows = table(result)
    assert [row[:-2] for row in rows[:3]] == [  # oldest first; "*" marks the leader
        ["*", leader.id, "web-1", "101", "running", "*", "10", "0.1.0", "2h", "ago"],
        [silent.id, "web-2", "102", "unresponsive", "emails", "10", "0.1.0", "1h", "ago"],
        [dead.id, "web-3", "103", "dead", "*", "10", "0.1.0", "1h", "ago"],
    ]
    assert rows[0][-2:] in (["now"], ["1s", "ago"], ["2s", "ago"]) or rows[0][-1] == "ago"
    assert rows[1][-2:] == ["1m", "ago"]
    assert rows[2][-2:] == ["5m", "ago"]
    assert result.stdout.splitlines()[1].startswith(f"*  {leader.id}")
    assert cluster["stopped"].id not in result.stdout
    assert "(1 stopped worker hidden; use --all)" in result.stderr
    assert result.stdout.splitlines()[-1] == (
        f"Leader (*): {leader.id} (web-1.prod.example.com, pid 101)."
    )


def test_workers_all_shows_stopped_ones(cluster: dict[str, WorkerInfo]) -> None:
    result = ok("workers", "--all")
    assert row_of(result, cluster["stopped"].id)[3] == "stopped"
    assert len(table(result)) == 5  # four rows and the leader line
    assert result.stderr == ""


def test_workers_json(cluster: dict[str, WorkerInfo]) -> None:
    data = {w["id"]: w for w in as_json("workers")}
    assert set(data) == {cluster[k].id for k in ("leader", "silent", "dead")}
    leader = data[cluster["leader"].id]
    assert leader["leader"] is True
    assert leader["state"] == leader["status"] == "running"
    assert leader["hostname"] == "web-1.prod.example.com"
    assert leader["queues"] is None
    silent = data[cluster["silent"].id]
    assert (silent["state"], silent["status"], silent["leader"]) == (
        "running",
        "unresponsive",
        False,
    )
    assert silent["queues"] == ["emails"]
    assert data[cluster["dead"].id]["status"] == "dead"
    assert len(as_json("workers", "--all")) == 4


def test_the_leader_marker_follows_the_lease(app: ModuleType) -> None:
    a, b = worker_row(pid=1), worker_row(pid=2, started_ago=60)
    register(app, a, b)
    lead(app, a.id)
    assert row_of(ok("workers"), a.id)[0] == "*"
    assert row_of(ok("workers"), b.id)[0] == b.id

    async def hand_over(e: Engine) -> None:
        await e.store.release_leadership(a.id)

    on_store(app, hand_over)
    lead(app, b.id)
    result = ok("workers")
    assert row_of(result, b.id)[0] == "*"
    assert row_of(result, a.id)[0] == a.id
    assert result.stdout.splitlines()[-1].startswith(f"Leader (*): {b.id} (web-1, pid 2)")
    assert [w["id"] for w in as_json("workers") if w["leader"]] == [b.id]


def test_an_expired_lease_means_no_leader(app: ModuleType) -> None:
    a = worker_row()
    register(app, a)
    lead(app, a.id, ttl=5, at=utcnow() - timedelta(minutes=1))
    result = ok("workers")
    assert row_of(result, a.id)[0] == a.id  # no marker
    assert result.stdout.splitlines()[-1].startswith("No leader: no worker holds the leader")
    assert [w["leader"] for w in as_json("workers")] == [False]


def test_workers_none(app: ModuleType) -> None:
    result = ok("workers")
    assert result.stdout.splitlines() == [
        "No workers registered.",
        "No leader: no worker holds the leader lease (one takes it within seconds).",
    ]
    assert as_json("workers") == []


def test_workers_only_stopped(app: ModuleType) -> None:
    register(app, worker_row(state=WorkerState.STOPPED), worker_row(state=WorkerState.STOPPED))
    result = ok("workers")
    assert result.stdout.splitlines()[0] == (
        "No running or dead workers (2 stopped; use --all to list them)."
    )


def test_worker_status_and_host_units() -> None:
    now = utcnow()
    row = worker_row(seen_ago=9)
    assert worker_status(row, now) == "running"
    assert worker_status(row, now + timedelta(seconds=2)) == "unresponsive"
    dead = worker_row(state=WorkerState.DEAD, seen_ago=3600)
    assert worker_status(dead, now) == "dead"
    assert short_host("web-1.prod.example.com") == "web-1"
    assert short_host("10.0.0.12") == "10.0.0.12"
    assert short_host("localhost") == "localhost"


# -- cron -----------------------------------------------------------------------------------------


def entries(app: ModuleType) -> dict[str, CronEntry]:
    return {e.name: e for e in on_store(app, lambda e: e.acron_entries())}


def test_cron_ls(app: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    # Wide enough that no cell is elided whatever the relative times read today.
    monkeypatch.setenv("COLUMNS", "140")
    result = ok("cron", "ls")
    header = result.stdout.splitlines()[0].split()
    assert header == ["NAME", "SCHEDULE", "JOB", "NEXT", "RUN", "(UTC)", "LAST", "RUN", "MISFIRE"]
    stored = entries(app)
    nightly, tick = stored["nightly"], stored["cluster.tick"]
    assert tick.next_run_at > utcnow()
    rows = table(result, width=140)
    assert [row[:10] + row[12:] for row in rows] == [
        ["cluster.tick", "*/5", "*", "*", "*", "*", "UTC", "cluster.tick",
         *tick.next_run_at.strftime("%Y-%m-%d %H:%M").split(), "-", "once"],
        ["nightly", "0", "3", "*", "*", "1-5", "Europe/Paris", "cluster.report",
         *nightly.next_run_at.strftime("%Y-%m-%d %H:%M").split(), "-", "skip", "30s"],
    ]  # fmt: skip
    assert [row[10] for row in rows] == ["(in", "(in"]
    assert rows[0][11][-2:] in ("s)", "m)")  # within 5 minutes
    # 03:00 Paris on a weekday: minutes away when the test runs between 02:00 and 03:00 there
    assert rows[1][11][-2:] in (
        ("m)", "h)") if nightly.next_run_at - utcnow() < timedelta(hours=2) else ("h)", "d)")
    )
    # The next tick of "0 3 * * 1-5" in Paris is 01:00 or 02:00 UTC on a weekday.
    assert nightly.next_run_at.hour in (1, 2)
    assert nightly.next_run_at.weekday() < 5


def test_cron_ls_json(app: ModuleType) -> None:
    data = {e["name"]: e for e in as_json("cron", "ls")}
    assert set(data) == {"cluster.tick", "nightly"}
    nightly = data["nightly"]
    assert nightly["payload"] == "monday"
    assert nightly["timezone"] == "Europe/Paris"
    assert (nightly["misfire"], nightly["misfire_grace"]) == ("skip", 30)
    assert nightly["enabled"] is True
    assert datetime.fromisoformat(nightly["next_run_at"]) > datetime.now(UTC)


def test_cron_ls_empty() -> None:
    result = run("cron", "ls", "--url", "memory://")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("No cron entries.")


def test_cron_show(app: ModuleType) -> None:
    result = ok("cron", "show", "nightly")
    fields = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert {k: v.strip() for k, v in fields.items() if k in ("name", "payload", "job_name")} == {
        "name": "nightly",
        "payload": "monday",
        "job_name": "cluster.report",
    }
    data = as_json("cron", "show", "nightly")
    assert data["expr"] == "0 3 * * 1-5"
    assert data["last_job_id"] is None


def test_cron_trigger_enqueues_a_job(app: ModuleType) -> None:
    result = ok("cron", "trigger", "nightly")
    assert result.stdout.startswith("Triggered cron entry 'nightly': enqueued job job_")
    job_id = result.stdout.split("enqueued job ")[1].split()[0]
    (job,) = as_json("jobs", "ls")
    assert job["id"] == job_id
    assert (job["name"], job["state"], job["payload"]) == ("cluster.report", "pending", "monday")
    assert job["headers"]["dispatch-cron"] == "nightly"
    assert row_of(ok("jobs", "ls"), job_id)[1:4] == ["cluster.report", "default", "pending"]
    # A manual trigger leaves the schedule alone.
    assert entries(app)["nightly"].next_run_at > utcnow()


def test_cron_disable_and_enable(app: ModuleType) -> None:
    result = ok("cron", "disable", "cluster.tick")
    assert result.stdout == "Disabled cron entry 'cluster.tick'.\n"
    row = row_of(ok("cron", "ls"), "cluster.tick")
    assert row[8:] == ["disabled", "-", "once"]  # next run, last run, misfire
    assert entries(app)["cluster.tick"].enabled is False

    result = ok("cron", "enable", "cluster.tick")
    entry = entries(app)["cluster.tick"]
    assert entry.enabled is True
    when = entry.next_run_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert result.stdout.startswith(f"Enabled cron entry 'cluster.tick'; next run {when} (in ")
    assert row_of(ok("cron", "ls"), "cluster.tick")[8] == entry.next_run_at.strftime("%Y-%m-%d")


def test_cron_rm(app: ModuleType) -> None:
    async def add_adhoc(e: Engine) -> None:
        now = utcnow()
        entry = CronEntry(
            name="adhoc",
            expr="@hourly",
            job_name="cluster.report",
            payload="sunday",
            next_run_at=now + timedelta(hours=1),
            created_at=now,
            updated_at=now,
        )
        await e.store.upsert_cron([entry], now=now)

    on_store(app, add_adhoc)
    result = ok("cron", "rm", "adhoc")
    assert result.stdout == "Removed cron entry 'adhoc'.\n"
    assert result.stderr == ""
    # An entry declared in code is removed too, with a warning that it comes back.
    declared = ok("cron", "rm", "nightly")
    assert declared.stdout == "Removed cron entry 'nightly'.\n"
    assert "declared in the application's code" in declared.stderr
    assert set(entries(app)) == {"cluster.tick"}


@pytest.mark.parametrize("command", ["show", "trigger", "enable", "disable", "rm"])
def test_cron_unknown_name(app: ModuleType, command: str) -> None:
    result = run("cron", command, "no-such-entry", "--app", APP)
    assert result.exit_code == 1
    assert one_error_line(result) == "Error: cron entry 'no-such-entry' not found"


# -- queues ---------------------------------------------------------------------------------------


def test_queues_ls(app: ModuleType) -> None:
    for day in ("mon", "tue", "wed"):
        app.report.enqueue(day)
    burst = run("worker", APP, "--burst", "--log-level", "warning", "--no-lead")
    assert burst.exit_code == 0, burst.output
    assert "3 completed" in burst.stdout
    for day in ("thu", "fri"):
        app.report.enqueue(day)

    async def claim_one(e: Engine) -> None:
        (job,) = await e.store.claim(
            worker_id="wkr_test", queues=None, names=None, limit=1, lease_seconds=30,
            now=utcnow(),
        )  # fmt: skip
        assert job.queue == "default"

    on_store(app, claim_one)
    for args in (("queues",), ("queues", "ls")):
        result = ok(*args)
        assert result.stdout.splitlines()[0].split() == [
            "NAME", "PAUSED", "DEPTH", "RUNNING", "COMPLETED/MIN", "CONCURRENCY", "RATE",
        ]  # fmt: skip
        assert table(result) == [
            ["default", "no", "1", "1", "3", "-", "-"],
            ["emails", "no", "0", "0", "0", "5", "per", "tenant", "10/s", "burst", "20", "per",
             "tenant"],
        ]  # fmt: skip


def test_queues_json(app: ModuleType) -> None:
    app.report.enqueue("mon")
    for args in (("queues",), ("queues", "ls")):
        data = {q["name"]: q for q in as_json(*args)}
        assert data["default"] == {
            "name": "default",
            "config": None,
            "paused": False,
            "depth": 1,
            "running": 0,
            "completed_last_minute": 0,
        }
        assert data["emails"]["config"] == {
            "name": "emails", "concurrency": 5, "rate": 10, "burst": 20, "per_tenant": True,
        }  # fmt: skip


def test_queues_empty() -> None:
    for args in (("queues",), ("queues", "ls")):
        result = run(*args, "--url", "memory://")
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("No queues:")


def test_queues_pause_and_resume(app: ModuleType) -> None:
    result = ok("queues", "pause", "emails")
    assert result.stdout == "Paused queue 'emails'; resume it with: dispatch queues resume emails\n"
    assert row_of(ok("queues"), "emails")[:2] == ["emails", "yes"]
    assert {q["name"]: q["paused"] for q in as_json("queues")} == {"emails": True}
    # The limits survive a pause.
    assert row_of(ok("queues"), "emails")[5] == "5"

    assert ok("queues", "resume", "emails").stdout == "Resumed queue 'emails'.\n"
    assert row_of(ok("queues"), "emails")[:2] == ["emails", "no"]
    assert {q["name"]: q["paused"] for q in as_json("queues")} == {"emails": False}


def test_a_paused_queue_is_not_worked(app: ModuleType) -> None:
    job = app.report.enqueue("mon")
    ok("queues", "pause", "default")
    assert "0 completed" in ok_worker_burst()
    assert row_of(ok("queues"), "default")[:4] == ["default", "yes", "1", "0"]
    ok("queues", "resume", "default")
    assert "1 completed" in ok_worker_burst()
    assert app.engine.get_job(job.id).result == "report for mon"


def ok_worker_burst() -> str:
    result = run("worker", APP, "--burst", "--log-level", "warning")
    assert result.exit_code == 0, result.output
    return result.stdout


def queue_config(name: str) -> dict[str, Any] | None:
    found = {q["name"]: q["config"] for q in as_json("queues")}
    config: dict[str, Any] | None = found.get(name)
    return config


def test_queues_set(app: ModuleType) -> None:
    result = ok("queues", "set", "api", "--rate", "2.5", "--per-tenant")
    assert result.stdout == "Queue 'api': rate 2.5/s burst 3, per tenant.\n"
    assert row_of(ok("queues"), "api")[5:] == ["-", "2.5/s", "burst", "3", "per", "tenant"]
    # Options not given keep their values.
    result = ok("queues", "set", "api", "--concurrency", "4", "--burst", "10")
    assert result.stdout == "Queue 'api': concurrency 4, rate 2.5/s burst 10, per tenant.\n"
    assert queue_config("api") == {
        "name": "api", "concurrency": 4, "rate": 2.5, "burst": 10, "per_tenant": True,
    }  # fmt: skip
    ok("queues", "set", "api", "--no-per-tenant")
    assert queue_config("api") == {
        "name": "api", "concurrency": 4, "rate": 2.5, "burst": 10, "per_tenant": False,
    }  # fmt: skip
    # --reset clears the others.
    result = ok("queues", "set", "api", "--reset", "--concurrency", "1")
    assert result.stdout == "Queue 'api': concurrency 1.\n"
    assert queue_config("api") == {
        "name": "api", "concurrency": 1, "rate": None, "burst": None, "per_tenant": False,
    }  # fmt: skip
    assert ok("queues", "set", "api", "--reset").stdout == "Queue 'api': no limits.\n"
    assert row_of(ok("queues"), "api") == ["api", "no", "0", "0", "0", "-", "-"]


def test_queues_set_keeps_the_pause(app: ModuleType) -> None:
    ok("queues", "pause", "emails")
    ok("queues", "set", "emails", "--concurrency", "2")
    assert row_of(ok("queues"), "emails")[:2] == ["emails", "yes"]
    assert queue_config("emails") == {
        "name": "emails", "concurrency": 2, "rate": 10, "burst": 20, "per_tenant": True,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("option", "value", "field"),
    [
        ("--concurrency", "0", "concurrency"),
        ("--concurrency", "-3", "concurrency"),
        ("--rate", "0", "rate"),
        ("--rate", "-1", "rate"),
        ("--rate", "inf", "rate"),
        ("--burst", "0", "burst"),
    ],
)
def test_queues_set_refuses_bad_values(
    app: ModuleType, option: str, value: str, field: str
) -> None:
    result = run("queues", "set", "emails", option, value, "--app", APP)
    assert result.exit_code == 1
    line = one_error_line(result)
    assert line.startswith(f"Error: queue 'emails': {field} must be")
    assert queue_config("emails") == {  # unchanged
        "name": "emails", "concurrency": 5, "rate": 10, "burst": 20, "per_tenant": True,
    }  # fmt: skip


@pytest.mark.parametrize(
    "args", [[], ["--concurrency", "many"], ["--rate", "fast"]], ids=["nothing", "int", "float"]
)
def test_queues_set_usage_errors(args: list[str]) -> None:
    result = run("queues", "set", "emails", *args, "--url", "memory://")
    assert result.exit_code == 2


def test_queues_group_options_reach_subcommands(app: ModuleType) -> None:
    result = run("queues", "--app", APP, "pause", "emails")
    assert result.exit_code == 0, result.output
    data = json.loads(run("queues", "--app", APP, "--json", "ls").stdout)
    assert {q["name"]: q["paused"] for q in data} == {"emails": True}


# -- dispatch worker: the cluster flags -----------------------------------------------------------


def test_worker_cluster_flags(app: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dict[str, Any]] = []
    build = app.engine.worker

    def spy(**options: Any) -> Any:
        made.append(options)
        return build(**options)

    monkeypatch.setattr(app.engine, "worker", spy)
    app.report.enqueue("mon")
    result = run(
        "worker", APP, "--burst", "--heartbeat", "0.5", "--worker-timeout", "4", "--no-lead",
        "--log-level", "warning",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 completed" in result.stdout
    (options,) = made
    assert (options["heartbeat_interval"], options["worker_timeout"], options["lead"]) == (
        0.5, 4.0, False,
    )  # fmt: skip

    made.clear()
    assert run("worker", APP, "--burst", "--log-level", "warning").exit_code == 0
    assert (made[0]["heartbeat_interval"], made[0]["worker_timeout"], made[0]["lead"]) == (
        None, None, True,
    )  # fmt: skip


def test_worker_refuses_a_timeout_shorter_than_the_heartbeat(app: ModuleType) -> None:
    result = run("worker", APP, "--heartbeat", "3", "--worker-timeout", "2")
    assert result.exit_code == 1
    assert "worker_timeout (2.0s) must be longer than the heartbeat" in one_error_line(result)


@pytest.mark.parametrize("args", [["--heartbeat", "0"], ["--worker-timeout", "-1"]])
def test_worker_rejects_bad_cluster_options(app: ModuleType, args: list[str]) -> None:
    assert run("worker", APP, *args).exit_code == 2


def test_every_cluster_command_is_registered() -> None:
    ctx = click.Context(cli)
    names = set(cli.list_commands(ctx))
    assert {"workers", "cron", "queues"} <= names
    cron = cli.get_command(ctx, "cron")
    queues = cli.get_command(ctx, "queues")
    assert isinstance(cron, click.Group)
    assert isinstance(queues, click.Group)
    assert set(cron.list_commands(ctx)) == {"ls", "show", "trigger", "enable", "disable", "rm"}
    assert set(queues.list_commands(ctx)) == {"ls", "pause", "resume", "set"}


# -- a SQL store ----------------------------------------------------------------------------------


@needs_sqlite
def test_cluster_commands_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    assert run("migrate", "--url", url).exit_code == 0
    engine = Engine(url)
    a = worker_row(host="db-host", pid=7)
    now = utcnow()

    async def seed(e: Engine) -> None:
        await e.store.register_worker(a)
        assert await e.store.acquire_leadership(worker_id=a.id, ttl=30, now=now)
        entry = CronEntry(
            name="hourly", expr="@hourly", job_name="sql.job", next_run_at=now + timedelta(hours=1),
            created_at=now, updated_at=now,
        )  # fmt: skip
        await e.store.upsert_cron([entry], now=now)
        await e.aset_queue(QueueConfig(name="bulk", rate=5))

    on_engine(engine, seed)

    def sql(*args: str) -> Result:
        result = run(*args, "--url", url)
        assert result.exit_code == 0, result.output
        return result

    workers = sql("workers")
    assert row_of(workers, a.id)[:5] == ["*", a.id, "db-host", "7", "running"]
    assert row_of(sql("cron", "ls"), "hourly")[1:3] == ["@hourly", "UTC"]
    triggered = sql("cron", "trigger", "hourly").stdout.split("enqueued job ")[1].split()[0]
    (job,) = json.loads(sql("jobs", "ls", "--json").stdout)
    assert (job["id"], job["name"]) == (triggered, "sql.job")
    sql("cron", "disable", "hourly")
    assert row_of(sql("cron", "ls"), "hourly")[4] == "disabled"
    sql("queues", "pause", "bulk")
    sql("queues", "set", "bulk", "--burst", "7")
    assert row_of(sql("queues"), "bulk") == [
        "bulk", "yes", "0", "0", "0", "-", "5/s", "burst", "7",
    ]  # fmt: skip
    assert row_of(sql("queues"), "default")[:3] == ["default", "no", "1"]
    bad = run("queues", "set", "bulk", "--concurrency", "0", "--url", url)
    assert bad.exit_code == 1
    assert one_error_line(bad).startswith("Error: queue 'bulk': concurrency must be >= 1")
    missing = run("cron", "enable", "nope", "--url", url)
    assert one_error_line(missing) == "Error: cron entry 'nope' not found"
