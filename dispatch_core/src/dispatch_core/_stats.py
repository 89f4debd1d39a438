"""What a worker did (re-exported by :mod:`dispatch_core.worker`)."""

from __future__ import annotations

import attrs

__all__ = ["WorkerStats", "DrainResult"]


@attrs.define
class WorkerStats:
    """What a worker did: counts of attempt outcomes."""

    completed: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0
    rescued: int = 0
    #: Outcomes refused by the store because the lease was lost (cancelled or rescued).
    lost: int = 0

    @property
    def processed(self) -> int:
        """Attempts that reached an outcome."""
        return self.completed + self.retried + self.failed


#: What :meth:`Engine.drain` returns.
DrainResult = WorkerStats
