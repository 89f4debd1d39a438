"""``dispatch jobs / dlq / workflows ls`` load no whole bodies (issue 16, finding 7): the
tables ask the store for none, ``--json`` prints long payloads, results, run inputs and
outputs as previews, and ``show`` prints them whole."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner

from dispatch_core.cli import cli
from dispatch_core.cli._paging import LIST_PREVIEW

HERE = Path(__file__).parent
APP = "cliapp_previews:engine"
LONG = "y" * 5000
#: How ``ls --json`` prints a 5,000-character string body.
CUT = {"truncated": True, "preview": ('"' + LONG)[:LIST_PREVIEW], "size": len(LONG) + 2}


@pytest.fixture
def asked() -> list[int | None]:
    """The ``preview`` of each listing the app's store is asked for, in order."""
    return []


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, asked: list[int | None]) -> Iterator[ModuleType]:
    """``cliapp_previews`` imported afresh, its store's listings recorded in ``asked``."""
    for var in ("DISPATCH_APP", "DISPATCH_URL", "DISPATCH_DISABLE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.syspath_prepend(str(HERE))
    sys.modules.pop("cliapp_previews", None)
    module = importlib.import_module("cliapp_previews")
    store = module.engine.store
    for name in ("list_jobs", "list_dlq", "list_runs"):
        listing = getattr(store, name)

        async def spy(filter: Any, listing: Any = listing) -> Any:
            asked.append(filter.preview)
            return await listing(filter)

        monkeypatch.setattr(store, name, spy)
    yield module
    sys.modules.pop("cliapp_previews", None)


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--app", APP], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def fields(item: dict[str, Any], name: str) -> dict[str, Any]:
    """What ``ls --json`` says of body ``name``: the preview fields, checked to go together."""
    assert item[name] is None
    return {key: item[f"{name}_{key}"] for key in ("truncated", "preview", "size")}


def test_jobs_ls_json_prints_previews_and_show_prints_whole(
    app: ModuleType, asked: list[int | None]
) -> None:
    long = app.echo.enqueue(LONG)
    short = app.echo.enqueue("short")
    asyncio.run(app.engine.drain())
    asked.clear()
    items = {item["id"]: item for item in json.loads(run("jobs", "ls", "--json"))}
    assert asked == [LIST_PREVIEW]
    assert fields(items[long.id], "payload") == CUT
    assert fields(items[long.id], "result") == CUT
    assert (items[short.id]["payload"], items[short.id]["result"]) == ("short", "short")
    assert "payload_truncated" not in items[short.id]
    shown = json.loads(run("jobs", "show", long.id, "--json"))
    assert (shown["payload"], shown["result"]) == (LONG, LONG)
    assert "payload_truncated" not in shown


def test_ls_tables_read_no_body(app: ModuleType, asked: list[int | None]) -> None:
    app.reject.enqueue(LONG)
    asyncio.run(app.engine.workflows["cliapp.mirror"].astart(LONG))
    asyncio.run(app.engine.drain())
    asked.clear()
    assert "cliapp.reject" in run("jobs", "ls")
    assert "cliapp.reject" in run("dlq", "ls")
    assert "cliapp.mirror" in run("workflows", "ls")
    assert asked == [0, 0, 0]


def test_dlq_and_workflows_ls_json_print_previews(app: ModuleType) -> None:
    app.reject.enqueue(LONG)
    run_id = asyncio.run(app.engine.workflows["cliapp.mirror"].astart(LONG)).id
    asyncio.run(app.engine.drain())
    (entry,) = json.loads(run("dlq", "ls", "--json"))
    assert fields(entry, "payload") == CUT
    assert json.loads(run("dlq", "show", entry["id"], "--json"))["payload"] == LONG
    (listed,) = json.loads(run("workflows", "ls", "--json"))
    assert listed["id"] == run_id
    assert fields(listed, "input") == CUT
    assert fields(listed, "output") == CUT


def test_replaying_every_dead_letter_lists_no_payload(
    app: ModuleType, asked: list[int | None]
) -> None:
    app.reject.enqueue(LONG)
    asyncio.run(app.engine.drain())
    asked.clear()
    assert "Replayed 1" in run("dlq", "replay", "--all")
    assert asked == [0]
