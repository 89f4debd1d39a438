"""Packaging rules and the public API: the ``dispatch_plugins`` namespace (no distribution
ships its ``__init__.py``, see docs/plugin-authors.md), lockstep versions with plugins pinned
to the same minor version of dispatch-core (README, "Install"), ``py.typed`` everywhere, and
``__all__`` checked both ways, as httpx's test does: what it lists exists and is documented,
and what a package or public module defines publicly is listed (or named below as private on
purpose)."""

from __future__ import annotations

import importlib
import inspect
import pathlib
import pkgutil
import tomllib
import types

import dispatch_core
from dispatch_core import errors as core_errors
from dispatch_core.workflows import errors as workflow_errors

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


# -- __all__, both ways ---------------------------------------------------------------------------

#: Public names defined in a public module but deliberately left out of its ``__all__``: helpers
#: of the package itself, reached through something that is exported. A name listed here that
#: is exported, or gone, fails the test too, so the list stays true.
INTENTIONALLY_PRIVATE: dict[str, set[str]] = {
    # The types of ``ctx.log`` and of ``engine.job(...)``: reached through those, not imported.
    "dispatch_core.context": {"JobLogger"},
    "dispatch_core.engine": {"JobDecorator"},
    # The engine builds the default chain and wraps run/step calls with them.
    "dispatch_core.middleware": {"builtin_middleware", "wrap_call"},
    "dispatch_plugins.redis.codec": {"opt_json"},
    "dispatch_plugins.admin.codec": {"next_runs"},
    "dispatch_plugins.admin.errors": {"to_api_error"},
    "dispatch_plugins.admin.serve": {"normalize_prefix"},
    "dispatch_plugins.webhooks.endpoints": {"read_config_file"},
    # The click group class of ``dispatch_cli``, and the decorator type of ``@dispatch.job``.
    "dispatch_flask.cli": {"DispatchAppGroup"},
    "dispatch_flask.extension": {"FlaskJobDecorator"},
    "dispatch_celery.config": {"check_setting"},
    "dispatch_celery.message": {"signature_of"},
    "dispatch_celery.task": {"backoff_countdown", "check_task_options"},
}


def top_level_packages() -> list[str]:
    """The import name of every distribution's package, found from its source tree."""
    names = ["dispatch_core"]
    names += sorted(
        f"dispatch_plugins.{p.parent.name}"
        for p in ROOT.glob("dispatch_plugins/*/src/dispatch_plugins/*/__init__.py")
    )
    names += sorted(p.parent.name for p in ROOT.glob("adapters/*/src/dispatch_*/__init__.py"))
    return names


def public_modules(package: str) -> list[types.ModuleType]:
    """``package`` and its modules whose dotted path has no ``_``-prefixed part."""
    root = importlib.import_module(package)
    found = [root]
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        parts = info.name.removeprefix(package + ".").split(".")
        if any(part.startswith("_") for part in parts):
            continue
        found.append(importlib.import_module(info.name))
    return found


def is_definition(value: object, name: str) -> bool:
    """A ``def name`` or ``class name`` of ours (not a value, nor a name from elsewhere)."""
    return (
        (inspect.isclass(value) or inspect.isfunction(value))
        and value.__name__ == name
        and value.__module__.startswith("dispatch_")
    )


def is_hookspec(value: object) -> bool:
    """A hook specification: its name is its API, pluggy finds it by attribute."""
    return hasattr(value, "dispatch_spec")


def is_admin_endpoint(module: types.ModuleType, value: object) -> bool:
    """An admin route handler, ``async def name(call)``: reached through ``endpoints``."""
    return (
        module.__name__.startswith("dispatch_plugins.admin.routes")
        and inspect.iscoroutinefunction(value)
        and list(inspect.signature(value).parameters) == ["call"]
    )


def test_every_distribution_has_its_package_checked() -> None:
    assert len(top_level_packages()) == len(distributions())


def test_everything_in_all_exists_and_is_documented() -> None:
    for package in top_level_packages():
        for module in public_modules(package):
            listed = getattr(module, "__all__", None)
            assert listed is not None, f"{module.__name__} has no __all__"
            assert len(listed) == len(set(listed)), f"{module.__name__}.__all__ repeats a name"
            for name in listed:
                assert hasattr(module, name), f"{module.__name__}.__all__ lists missing {name}"
                value = getattr(module, name)
                if is_definition(value, name):
                    assert inspect.getdoc(value), f"{module.__name__}.{name} has no docstring"


def test_every_public_name_of_a_package_is_in_its_all() -> None:
    for package in top_level_packages():
        root = importlib.import_module(package)
        unlisted = [
            name
            for name, value in vars(root).items()
            if not name.startswith("_")
            and name not in root.__all__
            # Modules: the package's own, or one it imports (importlib); __all__ may list one.
            and not isinstance(value, types.ModuleType)
            and type(value).__module__ != "__future__"  # from __future__ import annotations
        ]
        assert unlisted == [], f"{package} has public names missing from __all__: {unlisted}"


def test_every_public_definition_of_a_module_is_in_its_all() -> None:
    checked = set()
    for package in top_level_packages():
        for module in public_modules(package):
            checked.add(module.__name__)
            private = INTENTIONALLY_PRIVATE.get(module.__name__, set())
            unlisted = []
            for name, value in vars(module).items():
                if name.startswith("_") or not is_definition(value, name):
                    continue
                if value.__module__ != module.__name__:
                    continue  # imported, not defined here
                if is_hookspec(value) or is_admin_endpoint(module, value):
                    continue
                if name not in module.__all__ and name not in private:
                    unlisted.append(name)
            assert unlisted == [], (
                f"{module.__name__} defines public names missing from __all__: {unlisted} "
                "(add them, rename them with a leading _, or list them in INTENTIONALLY_PRIVATE)"
            )
            for name in private:
                assert hasattr(module, name), f"INTENTIONALLY_PRIVATE: {module.__name__}.{name}"
                assert name not in module.__all__, f"{module.__name__}.{name} is exported"
    assert set(INTENTIONALLY_PRIVATE) <= checked


def test_every_core_error_is_a_dispatch_error_and_exported() -> None:
    # errors.py promises ``except DispatchError`` catches every error a user can meet.
    for module in public_modules("dispatch_core"):
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
                and not name.startswith("_")
                and name != "CLIError"  # a click.ClickException: click prints it and exits
            ):
                assert issubclass(value, dispatch_core.DispatchError), f"{module.__name__}.{name}"
    for module in (core_errors, workflow_errors):
        for name in module.__all__:
            assert name in dispatch_core.__all__, f"{module.__name__}.{name} is not exported"
