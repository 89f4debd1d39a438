"""Packaging rules of DESIGN §1: namespace, lockstep versions, exported names."""

from __future__ import annotations

import importlib
import pathlib
import tomllib

import dispatch_core

ROOT = pathlib.Path(__file__).resolve().parents[2]


def distributions() -> dict[str, dict]:  # type: ignore[type-arg]
    found = {}
    for path in [
        ROOT / "dispatch_core" / "pyproject.toml",
        *ROOT.glob("dispatch_plugins/*/pyproject.toml"),
        *ROOT.glob("adapters/*/pyproject.toml"),
    ]:
        project = tomllib.loads(path.read_text())["project"]
        found[project["name"]] = project
    return found


def test_no_distribution_ships_the_namespace_init() -> None:
    assert not list(ROOT.glob("dispatch_plugins/*/src/dispatch_plugins/__init__.py"))
    ns = importlib.import_module("dispatch_plugins")
    assert getattr(ns, "__file__", None) is None  # a PEP 420 namespace


def test_versions_are_lockstep_and_plugins_pin_core() -> None:
    dists = distributions()
    assert "dispatch-core" in dists
    core = dists["dispatch-core"]["version"]
    major, minor, _ = core.split(".")
    for name, project in dists.items():
        assert project["version"] == core, name
        if name != "dispatch-core":
            assert (
                f"dispatch-core>={major}.{minor},<{major}.{int(minor) + 1}"
                in project["dependencies"]
            )


def test_every_leaf_package_is_typed() -> None:
    assert (ROOT / "dispatch_core/src/dispatch_core/py.typed").exists()
    for plugin in ROOT.glob("dispatch_plugins/*/src/dispatch_plugins/*"):
        assert (plugin / "py.typed").exists(), plugin
    adapters = list(ROOT.glob("adapters/*/src/dispatch_*"))
    assert adapters
    for adapter in adapters:
        assert (adapter / "py.typed").exists(), adapter


def test_public_api_is_exported() -> None:
    for name in dispatch_core.__all__:
        assert hasattr(dispatch_core, name), name
    assert dispatch_core.__version__ == distributions()["dispatch-core"]["version"]
