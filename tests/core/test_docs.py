"""Docs follow the code: the hook reference is generated from hookspecs.py and current."""

from __future__ import annotations

import importlib.util
import pathlib

from dispatch_core import hookspecs

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen", ROOT / "scripts/gen_hook_reference.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hook_reference_is_up_to_date() -> None:
    generated = load_generator().render()
    committed = (ROOT / "docs/reference/hooks.md").read_text()
    assert committed == generated, "run: python scripts/gen_hook_reference.py"


def test_every_hook_is_documented() -> None:
    page = (ROOT / "docs/reference/hooks.md").read_text()
    for name in dir(hookspecs):
        if name.startswith("dispatch_"):
            assert f"### `{name}`" in page
            assert getattr(hookspecs, name).__doc__, f"{name} has no docstring"
