"""The plugin is found through its entry point and registers the sqlite scheme."""

from __future__ import annotations

import importlib.metadata

from dispatch_core._plugins import make_plugin_manager
from dispatch_core.registry import StoreRegistry
from dispatch_plugins.sqlite import SQLiteStore


def test_entry_point_is_installed() -> None:
    eps = importlib.metadata.entry_points(group="dispatch_core.plugins")
    assert {ep.name: ep.value for ep in eps}.get("sqlite") == "dispatch_plugins.sqlite.plugin"


def test_registry_builds_a_sqlite_store_from_a_url() -> None:
    pm = make_plugin_manager(load_entrypoints=True)
    registry = StoreRegistry()
    pm.hook.dispatch_register_stores(registry=registry)
    assert "sqlite" in registry.schemes()
    store = registry.create("sqlite:////tmp/dispatch-plugin-test.db")
    assert isinstance(store, SQLiteStore)
    assert store.path == "/tmp/dispatch-plugin-test.db"
    assert store.scheme == "sqlite"
