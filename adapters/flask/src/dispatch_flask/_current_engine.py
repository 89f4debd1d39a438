"""The ``MODULE:ATTR`` target through which the core ``dispatch`` commands reach the engine of
the current Flask app.

The core commands find their engine by importing ``MODULE:ATTR`` (``--app``); ``flask
dispatch`` gives them ``dispatch_flask._current_engine:engine``, and this module's
``__getattr__`` (PEP 562) answers with ``current_app``'s engine at that moment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import current_app

if TYPE_CHECKING:
    from dispatch_flask.extension import Dispatch


def __getattr__(name: str) -> Any:
    if name != "engine":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    extension: Dispatch = current_app.extensions["dispatch"]
    return extension.get_engine(current_app._get_current_object())  # type: ignore[attr-defined]
