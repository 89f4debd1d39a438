"""Checked by mypy (``make lint``), not run: the Engine and the admin API's client both
satisfy :class:`dispatch_core.operations.Operations`, structurally."""

from __future__ import annotations

from dispatch_core import Engine
from dispatch_core.operations import Operations
from dispatch_plugins.admin.client import AdminClient


def operate(ops: Operations) -> Operations:
    return ops


operate(Engine("memory://"))
operate(AdminClient("http://127.0.0.1:8000/dispatch", "token"))
operate(object())  # type: ignore[arg-type]
