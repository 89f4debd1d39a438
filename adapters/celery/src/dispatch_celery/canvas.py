"""Celery's canvas (``group``, ``chain``, ``chord``, ``signature``): not supported.

The names exist so that ``from dispatch_celery import group`` works and the call fails with
a clear :class:`TypeError`, instead of an import error far from the cause. Dispatch
workflows (``@engine.workflow``, with ``wf.step`` and ``wf.parallel``) cover chains and
fan-out durably.
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["group", "chain", "chord", "signature", "chunks", "xmap", "xstarmap"]


def _unsupported(name: str) -> NoReturn:
    raise TypeError(
        f"canvas {name!r} is not supported by dispatch_celery: call tasks with delay or "
        "apply_async, and compose them with Dispatch workflows (@app.engine.workflow)"
    )


def group(*args: Any, **kwargs: Any) -> NoReturn:
    """Not supported. Raises :class:`TypeError`."""
    _unsupported("group")


def chain(*args: Any, **kwargs: Any) -> NoReturn:
    """Not supported. Raises :class:`TypeError`."""
    _unsupported("chain")


def chord(*args: Any, **kwargs: Any) -> NoReturn:
    """Not supported. Raises :class:`TypeError`."""
    _unsupported("chord")


def signature(*args: Any, **kwargs: Any) -> NoReturn:
    """Not supported. Raises :class:`TypeError`."""
    _unsupported("signature")


def chunks(*args: Any, **kwargs: Any) -> NoReturn:
    """Not supported. Raises :class:`TypeError`."""
    _unsupported("chunks")


def xmap(*args: Any, **kwargs: Any) -> NoReturn:
    """Not supported. Raises :class:`TypeError`."""
    _unsupported("xmap")


def xstarmap(*args: Any, **kwargs: Any) -> NoReturn:
    """Not supported. Raises :class:`TypeError`."""
    _unsupported("xstarmap")
