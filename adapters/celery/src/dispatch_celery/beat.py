"""``app.conf.beat_schedule`` declared as Dispatch cron entries.

There is no beat process: the engine's cron entries are written to the store when a worker
starts, and the cluster leader fires each tick once, however many workers run.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from dispatch_celery.message import Message, encode
from dispatch_celery.schedules import crontab, interval_expression
from dispatch_core import Engine

if TYPE_CHECKING:
    from dispatch_celery.app import Celery

__all__ = ["compile_beat_schedule", "beat_expression"]

_ENTRY_KEYS = frozenset({"task", "schedule", "args", "kwargs", "options", "relative"})
_ENTRY_OPTIONS = frozenset({"queue", "expires"})


def beat_expression(entry_name: str, schedule: Any) -> str:
    """The cron expression of a beat entry's ``schedule``: a :class:`crontab`, or an
    interval in seconds or as a ``timedelta`` (see
    :func:`~dispatch_celery.schedules.interval_expression`).

    Raises:
        TypeError: another kind of schedule (``solar``, a custom class).
        ValueError: an interval no cron expression can give.
    """
    if isinstance(schedule, crontab):
        return schedule.expr
    if isinstance(schedule, timedelta) or (
        isinstance(schedule, int | float) and not isinstance(schedule, bool)
    ):
        try:
            return interval_expression(schedule)
        except ValueError as exc:
            raise ValueError(f"beat_schedule entry {entry_name!r}: {exc}") from None
    raise TypeError(
        f"beat_schedule entry {entry_name!r}: schedule {schedule!r} is not supported by "
        "dispatch_celery; use crontab(...), a number of seconds or a timedelta"
    )


def compile_beat_schedule(
    app: Celery, engine: Engine, schedule: Mapping[str, Any], timezone: str
) -> None:
    """Declare each beat entry as a cron entry of ``engine`` (same name).

    Args:
        app: The app (its registered tasks check the entries' arguments).
        engine: The engine to declare the entries on.
        schedule: ``app.conf.beat_schedule``.
        timezone: ``app.conf.timezone`` (crontab fields are read in it), default UTC.

    Raises:
        TypeError: an entry key, option or schedule dispatch_celery does not support.
        EncodeError: an entry's argument is not JSON.
        UnknownJobError: an entry names a task the engine does not register.
    """
    if not isinstance(schedule, Mapping):
        raise TypeError(f"app.conf.beat_schedule must be a dict of entries, got {schedule!r}")
    for name, entry in schedule.items():
        if not isinstance(entry, Mapping):
            raise TypeError(f"beat_schedule entry {name!r} must be a dict, got {entry!r}")
        for key in entry:
            if key not in _ENTRY_KEYS:
                raise TypeError(
                    f"beat_schedule entry {name!r}: key {key!r} is not supported by dispatch_celery"
                )
        if entry.get("relative"):
            raise TypeError(
                f"beat_schedule entry {name!r}: 'relative' is not supported by dispatch_celery "
                "(ticks are aligned on the clock)"
            )
        task_name = entry.get("task")
        if not isinstance(task_name, str) or not task_name:
            raise TypeError(f"beat_schedule entry {name!r} needs 'task': a task name")
        if "schedule" not in entry:
            raise TypeError(f"beat_schedule entry {name!r} needs 'schedule'")
        options = dict(entry.get("options") or {})
        for option in options:
            if option not in _ENTRY_OPTIONS:
                raise TypeError(
                    f"beat_schedule entry {name!r}: option {option!r} is not supported by "
                    "dispatch_celery (queue and expires are)"
                )
        expires = options.get("expires")
        if expires is not None and not (
            isinstance(expires, int | float | timedelta) and not isinstance(expires, bool)
        ):
            raise TypeError(
                f"beat_schedule entry {name!r}: expires must be seconds after each run is "
                f"due, got {expires!r}"
            )
        queue = options.get("queue")
        if queue is not None and not isinstance(queue, str):
            raise TypeError(f"beat_schedule entry {name!r}: queue must be a str, got {queue!r}")
        expr = beat_expression(name, entry["schedule"])
        task = app.tasks.get(task_name)
        args, kwargs = encode(
            task_name,
            entry.get("args"),
            entry.get("kwargs"),
            signature=task._signature if task is not None else None,
        )
        expires_in = expires.total_seconds() if isinstance(expires, timedelta) else expires
        payload = Message(args=args, kwargs=kwargs, expires_in=expires_in).payload()
        engine.schedule(name, expr, task_name, payload, timezone=timezone, queue=queue)
