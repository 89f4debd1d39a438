"""Plugins and adapters use core's public modules only (issue 17): what a store author needs
is in dispatch_core.storekit, so a private core module can change without breaking them."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
PRIVATE = re.compile(
    r"^\s*(from dispatch_core\._\w+|from dispatch_core import _|import dispatch_core\._)"
)


def test_no_distribution_but_core_imports_a_private_core_module() -> None:
    offenders = []
    for path in [
        *ROOT.glob("dispatch_plugins/*/src/**/*.py"),
        *ROOT.glob("adapters/*/src/**/*.py"),
    ]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE.match(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []
