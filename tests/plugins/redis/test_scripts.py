"""The Lua scripts come from the package's ``lua/`` resources, all of them, and all compile."""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
from importlib.resources import files

import redis

from dispatch_plugins.redis import lua
from dispatch_plugins.redis.lua import PRELUDE, SCRIPTS, SHAS

from .conftest import REDIS_URL

#: Every script the store runs, by the name it calls it (its file is ``lua/<name>.lua``).
EXPECTED = {
    # jobs
    "enqueue",
    "count_jobs",
    "count_runnable_plan",
    "count_runnable",
    "buckets",
    "cancel",
    "retry",
    # claim
    "claim",
    "heartbeat",
    "finish",
    "mark_silent",
    "rescue",
    "next_run_at",
    # dlq
    "cards",
    "replay_dlq",
    "delete_dlqs",
    # cluster
    "register_worker",
    "deregister_worker",
    "zhashes",
    "acquire_leadership",
    "release_leadership",
    "upsert_cron",
    "set_cron_enabled",
    "fire_cron",
    "delete_cron",
    "set_queue",
    "pause_queue",
    "queue_stats",
    "prune_jobs",
    "prune_dlq",
    "prune_workers",
    # workflows
    "create_run",
    "update_run",
    "set_run_version",
    "save_step",
    "send_event",
    "take_event",
    # shared: listings, counts and walks
    "page",
    "zcounts",
    "walk",
    "purge_walk",
    # the keyspace version
    "migrate",
    "stamp",
    "migrate_dlq",
    "migrate_done",
    "drop_zsets",
}


SECTIONS = ("common", "jobs", "claim", "dlq", "cluster", "workflows")


def _called_names() -> set[str]:
    """The script names the store's modules pass to ``_call`` (or to a helper running one)."""
    names: set[str] = set()
    # by module name: the attribute ``ops.claim`` is the function, not the module
    for name in ("store", "ops", *(f"ops.{m}" for m in SECTIONS)):
        module = importlib.import_module(f"dispatch_plugins.redis.{name}")
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called not in ("_call", "_prune_steps"):
                continue
            first = node.args[1] if called == "_prune_steps" else node.args[0]
            options = [first.body, first.orelse] if isinstance(first, ast.IfExp) else [first]
            for option in options:
                if isinstance(option, ast.Name):
                    continue  # _prune_steps passing on its script: counted at its callers
                assert isinstance(option, ast.Constant), ast.unparse(node)
                names.add(str(option.value))
    return names


def test_every_script_is_a_resource_of_the_package() -> None:
    here = files(lua.__name__)
    on_disk = {e.name.removesuffix(".lua") for e in here.iterdir() if e.name.endswith(".lua")}
    assert on_disk == (EXPECTED - {"purge_walk"}) | {"_lib"}
    assert set(SCRIPTS) == EXPECTED
    for name, text in SCRIPTS.items():
        body = (here / f"{name.removeprefix('purge_')}.lua").read_text(encoding="utf-8")
        assert text == PRELUDE + "\n" + body
        # what a script does and takes is said at the top of its file
        assert body.startswith("-- "), name
        assert "-- ARGV: prefix" in body, name
        assert SHAS[name] == hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def test_the_store_calls_only_scripts_that_exist() -> None:
    called = _called_names()
    assert called <= set(SCRIPTS), called - set(SCRIPTS)
    assert called == EXPECTED


def test_every_script_compiles_on_the_server(redis_base: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for name, text in SCRIPTS.items():
            assert client.script_load(text) == SHAS[name], name
    finally:
        client.close()
