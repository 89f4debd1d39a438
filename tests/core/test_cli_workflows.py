"""``dispatch workflows ls/show/cancel/signal`` against a real engine and workers."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner, Result

from dispatch_core import RunState
from dispatch_core.cli import cli

HERE = Path(__file__).resolve().parent
APP = "cliapp_workflows:engine"


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    for var in ("DISPATCH_APP", "DISPATCH_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "140")
    monkeypatch.syspath_prepend(str(HERE))
    sys.modules.pop("cliapp_workflows", None)
    yield importlib.import_module("cliapp_workflows")
    sys.modules.pop("cliapp_workflows", None)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def started(app: ModuleType) -> str:
    """A run of the app's workflow, parked on its wait for the 'paid' event."""

    async def go() -> str:
        handle = await app.order.astart(42)
        await app.engine.drain()
        return str(handle.id)

    return asyncio.run(go())


def test_ls_show_signal_and_the_run_completes(app: ModuleType) -> None:
    run_id = started(app)
    listed = run("workflows", "ls", "--app", APP)
    assert listed.exit_code == 0
    [row] = [ln for ln in listed.stdout.splitlines() if run_id in ln]
    assert "cliapp.order" in row
    assert "waiting" in row
    assert "event 'paid'" in row

    shown = run("workflows", "show", run_id, "--app", APP)
    assert shown.exit_code == 0
    assert "reserve" in shown.stdout
    assert '"res-42"' in shown.stdout
    assert "pending" in shown.stdout  # the wait for 'paid'

    sent = run("workflows", "signal", run_id, "paid", "--payload", '{"cents": 1999}', "--app", APP)
    assert sent.exit_code == 0, sent.output
    asyncio.run(app.engine.drain())
    data = json.loads(run("workflows", "show", run_id, "--json", "--app", APP).stdout)
    assert data["run"]["state"] == "completed"
    assert data["run"]["output"] == {"reservation": "res-42", "paid": {"cents": 1999}}
    assert [s["name"] for s in data["timeline"]] == ["reserve", "paid"]


def test_cancel_and_errors(app: ModuleType) -> None:
    run_id = started(app)
    cancelled = run("workflows", "cancel", run_id, "--app", APP)
    assert cancelled.exit_code == 0
    assert f"Cancelled {run_id}" in cancelled.stdout
    again = run("workflows", "cancel", run_id, "--app", APP)
    assert again.exit_code == 1
    assert "is already cancelled" in again.output
    missing = run("workflows", "show", "wfrun_nope", "--app", APP)
    assert missing.exit_code == 1
    assert "workflow run 'wfrun_nope' not found" in missing.output
    bad = run("workflows", "signal", run_id, "paid", "--payload", "{oops", "--app", APP)
    assert bad.exit_code == 1
    assert "--payload is not JSON" in bad.output
    states = json.loads(run("workflows", "ls", "--json", "--app", APP).stdout)
    assert [r["state"] for r in states] == [RunState.CANCELLED.value]


def test_migrate_refuses_an_unknown_version_and_a_finished_run(app: ModuleType) -> None:
    run_id = started(app)
    unknown = run("workflows", "migrate", run_id, "9", "--app", APP)
    assert unknown.exit_code == 1
    assert "has no version 9" in unknown.output
    same = run("workflows", "migrate", run_id, "1", "--app", APP)
    assert same.exit_code == 0
    assert f"Run {run_id} (cliapp.order) is now on version 1." in same.stdout
    run("workflows", "cancel", run_id, "--app", APP)
    finished = run("workflows", "migrate", run_id, "1", "--app", APP)
    assert finished.exit_code == 1
    assert "could not be migrated: it is cancelled" in finished.output
