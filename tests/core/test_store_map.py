"""Every store lays its operations out on one map: the contract's sections
(dispatch_core.storekit.STORE_SECTIONS), one module each (docs/internals.md)."""

from __future__ import annotations

import importlib
import inspect

import pytest

from dispatch_core.store import Store
from dispatch_core.storekit import STORE_OPERATIONS, STORE_SECTIONS

PLUGIN_STORES = ["sqlite", "postgres", "redis"]
MEMORY_CLASSES = {
    "jobs": "JobsOps",
    "claim": "ClaimOps",
    "dlq": "DLQOps",
    "cluster": "ClusterOps",
    "workflows": "WorkflowOps",
}


def test_the_map_names_every_operation_of_the_contract_once() -> None:
    abstract = {
        name for name, value in vars(Store).items() if getattr(value, "__isabstractmethod__", False)
    }
    assert len(STORE_OPERATIONS) == len(set(STORE_OPERATIONS))
    assert set(STORE_OPERATIONS) == abstract - {"open", "close", "migrate"}


@pytest.mark.parametrize("store", PLUGIN_STORES)
@pytest.mark.parametrize("section", list(STORE_SECTIONS))
def test_each_plugin_store_holds_a_section_in_its_module(store: str, section: str) -> None:
    pytest.importorskip(f"dispatch_plugins.{store}")
    module = importlib.import_module(f"dispatch_plugins.{store}.ops.{section}")
    ops = importlib.import_module(f"dispatch_plugins.{store}.ops")
    for name in STORE_SECTIONS[section]:
        fn = getattr(module, name)
        assert inspect.isfunction(fn), f"{module.__name__}.{name}"
        assert fn.__module__ == module.__name__, f"{name} is defined in {fn.__module__}"
        assert name in module.__all__
        assert getattr(ops, name) is fn  # the package re-exports it


@pytest.mark.parametrize("section", list(STORE_SECTIONS))
def test_the_memory_store_holds_a_section_in_its_module(section: str) -> None:
    module = importlib.import_module(f"dispatch_core.stores.memory.{section}")
    mixin = getattr(module, MEMORY_CLASSES[section])
    for name in STORE_SECTIONS[section]:
        assert name in vars(mixin), f"{mixin.__qualname__} lacks {name}"
