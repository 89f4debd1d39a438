"""Cron: schedules parsed by croniter, and the entries a store keeps.

An entry names a job and a payload; the leader enqueues that job at each tick. A tick is
enqueued at most once, whoever the leader is: the store advances the entry's ``next_run_at``
and writes the job in one transaction, conditional on ``next_run_at`` still being the tick, and
the job carries the unique key ``cron:<name>:<tick>``.
"""

from __future__ import annotations

import enum
import zoneinfo
from datetime import UTC, datetime

import attrs
from croniter import CroniterError, croniter

from dispatch_core.errors import CronExpressionError
from dispatch_core.models import JSON

__all__ = ["CronEntry", "CronSchedule", "MisfirePolicy", "cron_unique_key"]

_ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)


class MisfirePolicy(enum.StrEnum):
    """What the leader does with ticks that passed while no leader ran (downtime)."""

    ONCE = "once"
    """Fire once for all the missed ticks, then go on from now (the default)."""
    SKIP = "skip"
    """Fire a tick only if it is less than ``misfire_grace`` seconds late; skip the others."""


@attrs.frozen(kw_only=True)
class CronSchedule:
    """A parsed cron expression in a timezone.

    Five fields (minute hour day month weekday), six with seconds first
    (``*/10 * * * * *``), or an alias such as ``@hourly``.
    """

    expr: str
    timezone: str = "UTC"
    _tz: zoneinfo.ZoneInfo = attrs.field(init=False, repr=False, eq=False)
    _seconds: bool = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        expr = self.expr.strip()
        if not expr:
            raise CronExpressionError(self.expr, "it is empty")
        try:
            tz = zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise CronExpressionError(self.expr, f"unknown timezone {self.timezone!r}") from exc
        fields = expr.split()
        if expr.startswith("@"):
            if expr.lower() not in _ALIASES:
                known = ", ".join(sorted(_ALIASES))
                raise CronExpressionError(self.expr, f"unknown alias; use one of {known}")
        elif len(fields) not in (5, 6):
            raise CronExpressionError(
                self.expr,
                f"it has {len(fields)} fields; use 5 (minute hour day month weekday) or 6 "
                "(seconds first)",
            )
        seconds = len(fields) == 6
        try:
            croniter(expr, datetime(2000, 1, 1, tzinfo=tz), second_at_beginning=seconds)
        except (CroniterError, ValueError, KeyError) as exc:
            raise CronExpressionError(self.expr, str(exc) or type(exc).__name__) from exc
        object.__setattr__(self, "_tz", tz)
        object.__setattr__(self, "_seconds", seconds)

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment``, in UTC."""
        it = croniter(
            self.expr.strip(), moment.astimezone(self._tz), second_at_beginning=self._seconds
        )
        nxt: datetime = it.get_next(datetime)
        return nxt.astimezone(UTC)


@attrs.frozen(kw_only=True)
class CronEntry:
    """A schedule that enqueues a job, as a store keeps it.

    Attributes:
        name: Unique name of the entry (the id the CLI and the API use).
        expr: The cron expression.
        timezone: IANA name the expression is read in.
        job_name: The job to enqueue at each tick.
        payload: Its payload, already validated and in JSON types.
        queue: Queue of the enqueued job (``None``: the job's default).
        misfire: The misfire policy.
        misfire_grace: Seconds a tick may be late under :attr:`MisfirePolicy.SKIP`.
        enabled: Whether the leader fires it; enabling and disabling persist.
        next_run_at: The next tick to fire (UTC).
        last_run_at: When the last tick fired.
        last_job_id: The job the last tick enqueued.
    """

    name: str
    expr: str
    timezone: str = "UTC"
    job_name: str
    payload: JSON = None
    queue: str | None = None
    misfire: MisfirePolicy = MisfirePolicy.ONCE
    misfire_grace: float = 60.0
    enabled: bool = True
    next_run_at: datetime
    last_run_at: datetime | None = None
    last_job_id: str | None = None
    created_at: datetime
    updated_at: datetime

    def schedule(self) -> CronSchedule:
        """The parsed expression."""
        return CronSchedule(expr=self.expr, timezone=self.timezone)


def cron_unique_key(name: str, tick: datetime) -> str:
    """The unique key of the job an entry enqueues for ``tick``."""
    return f"cron:{name}:{tick.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"
