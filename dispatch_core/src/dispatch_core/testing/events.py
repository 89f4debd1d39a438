"""Record the lifecycle hooks an engine fires, for assertions in tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs

from dispatch_core.hookspecs import LIFECYCLE_HOOKS

if TYPE_CHECKING:
    from dispatch_core.engine import Engine

__all__ = ["CapturedEvent", "EventCapture", "capture_events"]


@attrs.frozen(kw_only=True)
class CapturedEvent:
    """One lifecycle hook call: its short name (``job_completed``) and its arguments."""

    name: str
    args: dict[str, Any]


@attrs.define
class EventCapture:
    """The events recorded by :func:`capture_events`, in the order they were emitted."""

    events: list[CapturedEvent] = attrs.Factory(list)

    def names(self) -> list[str]:
        """The short names of the recorded events, in order."""
        return [e.name for e in self.events]

    def of(self, name: str) -> list[CapturedEvent]:
        """The recorded events called ``name`` (``"job_failed"`` or ``"dispatch_job_failed"``).

        Raises:
            ValueError: ``name`` is no lifecycle hook (a misspelling would match nothing).
        """
        short = name.removeprefix("dispatch_")
        if f"dispatch_{short}" not in LIFECYCLE_HOOKS:
            known = ", ".join(h.removeprefix("dispatch_") for h in LIFECYCLE_HOOKS)
            raise ValueError(f"unknown lifecycle hook {name!r}; the lifecycle hooks are: {known}")
        return [e for e in self.events if e.name == short]

    def _record(self, hook: str, args: dict[str, Any]) -> None:
        self.events.append(CapturedEvent(name=hook.removeprefix("dispatch_"), args=args))


@contextmanager
def capture_events(engine: Engine) -> Iterator[EventCapture]:
    """Record every lifecycle hook ``engine`` emits while the block runs.

    Events are recorded when emitted, before plugins see them, so they are complete once
    ``await engine.drain()`` returns::

        with capture_events(engine) as captured:
            await engine.drain()
        assert captured.names() == ["job_started", "job_completed"]
    """
    capture = EventCapture()
    engine.hooks.add_listener(capture._record)
    try:
        yield capture
    finally:
        engine.hooks.remove_listener(capture._record)
