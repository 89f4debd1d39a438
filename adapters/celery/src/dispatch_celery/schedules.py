"""``crontab`` for ``app.conf.beat_schedule``, compiled to a cron expression.

Dispatch runs periodic jobs from cron expressions (the cluster leader fires them, once per
tick, whatever the number of workers), so a beat schedule is turned into one: a
:class:`crontab` maps field for field, and an interval (seconds or a ``timedelta``) maps when
it divides a minute, an hour or a day evenly.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from dispatch_core import CronSchedule

__all__ = ["crontab", "interval_expression"]

_Field = int | str | Iterable[int | str]


def _field(name: str, value: _Field) -> str:
    if isinstance(value, bool):
        raise TypeError(f"crontab {name}={value!r}: expected an int, a string or a list")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        text = value.strip()
        if not text or any(c.isspace() for c in text):
            raise ValueError(f"crontab {name}={value!r}: a field is one word, e.g. '*/15'")
        return text
    if isinstance(value, Iterable):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
        if not items:
            raise ValueError(f"crontab {name}={value!r}: an empty list matches nothing")
        return ",".join(_field(name, v) for v in items)
    raise TypeError(f"crontab {name}={value!r}: expected an int, a string or a list")


class crontab:  # Celery's name
    """A cron-like schedule for a beat entry, as in Celery.

    ``crontab(minute="*/15")`` runs every quarter hour; ``crontab(hour=7, minute=30,
    day_of_week=1)`` at 7:30 every Monday. Each field takes an int, a cron string (``"*/15"``,
    ``"1-5"``, ``"mon-fri"``) or a list of those. Fields left out are ``"*"`` (so, as in
    Celery, ``crontab(hour=7)`` runs every minute from 7:00 to 7:59). Times are read in
    ``app.conf.timezone`` (UTC by default).

    Args:
        minute: Minutes, 0-59.
        hour: Hours, 0-23.
        day_of_week: Days of the week, 0-6 with 0 = Sunday, or names (``"mon"``).
        day_of_month: Days of the month, 1-31.
        month_of_year: Months, 1-12.

    Raises:
        ValueError: a field is not a valid cron field (the message says which).
        TypeError: an argument Celery accepts but dispatch_celery does not (``nowfun``,
            ``app``).
    """

    def __init__(
        self,
        minute: _Field = "*",
        hour: _Field = "*",
        day_of_week: _Field = "*",
        day_of_month: _Field = "*",
        month_of_year: _Field = "*",
        **kwargs: Any,
    ) -> None:
        for option in kwargs:
            raise TypeError(
                f"crontab option {option!r} is not supported by dispatch_celery (the schedule "
                "is read in app.conf.timezone)"
            )
        self.minute = _field("minute", minute)
        self.hour = _field("hour", hour)
        self.day_of_week = _field("day_of_week", day_of_week)
        self.day_of_month = _field("day_of_month", day_of_month)
        self.month_of_year = _field("month_of_year", month_of_year)
        #: The cron expression: minute hour day-of-month month day-of-week.
        self.expr = " ".join(
            (self.minute, self.hour, self.day_of_month, self.month_of_year, self.day_of_week)
        )
        CronSchedule(expr=self.expr)  # refuse a bad field now, not when a worker starts

    def __repr__(self) -> str:
        return f"<crontab: {self.expr} (m/h/dM/MY/d)>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, crontab) and other.expr == self.expr

    def __hash__(self) -> int:
        return hash(self.expr)


def interval_expression(every: float | timedelta) -> str:
    """The cron expression firing every ``every`` seconds, aligned on the clock.

    An interval maps when it divides a minute (``*/10 * * * * *``, with seconds), an hour
    (``*/15 * * * *``) or a day (``0 */6 * * *``), or is one day or one week.

    Raises:
        ValueError: the interval is not positive, not whole seconds, or does not divide a
            minute, an hour or a day.
    """
    seconds = every.total_seconds() if isinstance(every, timedelta) else float(every)
    if seconds <= 0 or seconds != int(seconds):
        raise ValueError(f"an interval of {seconds:g}s is not a positive whole number of seconds")
    s = int(seconds)
    if s < 60 and 60 % s == 0:
        return "* * * * * *" if s == 1 else f"*/{s} * * * * *"
    if s % 60 == 0 and s < 3600 and 3600 % s == 0:
        m = s // 60
        return "* * * * *" if m == 1 else f"*/{m} * * * *"
    if s % 3600 == 0 and s < 86400 and 86400 % s == 0:
        h = s // 3600
        return "0 * * * *" if h == 1 else f"0 */{h} * * *"
    if s == 86400:
        return "0 0 * * *"
    if s == 7 * 86400:
        return "0 0 * * 0"
    raise ValueError(
        f"an interval of {s}s cannot be a cron schedule: it must divide a minute, an hour or a "
        "day evenly (or be a day or a week); use crontab(...) instead"
    )
