"""How a failure is recorded: ``Type: message``, then the traceback without Dispatch's own
frames (middleware, the worker, the workflow runtime), cut to a size a row can hold."""

from __future__ import annotations

import os
import traceback

__all__ = ["format_error"]

_OWN_DIR = os.path.dirname(__file__)
_MAX_CHARS = 8000


def format_error(exc: BaseException) -> str:
    """The text stored as a job's or a step's error."""
    tb = traceback.TracebackException.from_exception(exc)
    tb.stack = traceback.StackSummary.from_list(
        [f for f in tb.stack if not f.filename.startswith(_OWN_DIR)]
    )
    text = "".join(tb.format())
    if len(text) > _MAX_CHARS:
        text = text[: _MAX_CHARS // 4] + "\n[...]\n" + text[-_MAX_CHARS // 2 :]
    return f"{type(exc).__name__}: {exc}\n\n{text}"
