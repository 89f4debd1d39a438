"""Retention: how long finished jobs, dead-letter entries and worker rows are kept.

The leader prunes them in batches; see :class:`Retention`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs

from dispatch_core.errors import ConfigurationError
from dispatch_core.store import PruneCutoffs

__all__ = ["Retention"]


@attrs.frozen(kw_only=True)
class Retention:
    """Ages after which the leader deletes rows; ``None`` keeps them forever.

    Attributes:
        completed: Completed jobs, counted from when they finished (default one day).
        failed: Failed jobs (their dead-letter entries are kept by ``dlq``), default 7 days.
        cancelled: Cancelled jobs, default 7 days.
        dlq: Dead-letter entries, from when they failed, default 30 days.
        workers: Rows of stopped or dead workers, from their last heartbeat, default one day.
        interval: Seconds between two pruning passes of the leader.
        batch: Rows of each kind deleted per statement.
    """

    completed: timedelta | None = timedelta(days=1)
    failed: timedelta | None = timedelta(days=7)
    cancelled: timedelta | None = timedelta(days=7)
    dlq: timedelta | None = timedelta(days=30)
    workers: timedelta | None = timedelta(days=1)
    interval: float = 60.0
    batch: int = 10_000

    def __attrs_post_init__(self) -> None:
        for field in ("completed", "failed", "cancelled", "dlq", "workers"):
            age = getattr(self, field)
            if age is not None and age <= timedelta(0):
                raise ConfigurationError(f"retention {field} must be positive or None, got {age}")
        if self.interval <= 0 or self.batch < 1:
            raise ConfigurationError("retention interval must be > 0 and batch >= 1")

    @classmethod
    def keep_everything(cls) -> Retention:
        """A policy that deletes nothing."""
        return cls(completed=None, failed=None, cancelled=None, dlq=None, workers=None)

    def cutoffs(self, now: datetime) -> PruneCutoffs:
        """The prune cutoffs at ``now``."""

        def before(age: timedelta | None) -> datetime | None:
            return None if age is None else now - age

        return PruneCutoffs(
            completed=before(self.completed),
            failed=before(self.failed),
            cancelled=before(self.cancelled),
            dlq=before(self.dlq),
            workers=before(self.workers),
        )
