"""Queue limits: cluster-wide concurrency caps, token-bucket rate limits, pause and resume.

Limits live in the store, so every worker of the cluster obeys the same ones; the store's
``claim`` enforces them. :class:`TokenBucket` holds the rate-limit arithmetic that stores share.
"""

from __future__ import annotations

import math
from datetime import datetime

import attrs

from dispatch_core.errors import ConfigurationError

__all__ = ["QueueConfig", "QueueStats", "TokenBucket"]


def _check_limits(instance: QueueConfig) -> None:
    if instance.concurrency is not None and instance.concurrency < 1:
        raise ConfigurationError(
            f"queue {instance.name!r}: concurrency must be >= 1, got {instance.concurrency}"
        )
    if instance.rate is not None and not (instance.rate > 0 and math.isfinite(instance.rate)):
        raise ConfigurationError(
            f"queue {instance.name!r}: rate must be a positive number of jobs per second, "
            f"got {instance.rate}"
        )
    if instance.burst is not None and instance.burst < 1:
        raise ConfigurationError(
            f"queue {instance.name!r}: burst must be >= 1, got {instance.burst}"
        )


@attrs.frozen(kw_only=True)
class QueueConfig:
    """The limits of one queue, enforced across every worker that shares the store.

    Attributes:
        name: The queue.
        concurrency: At most this many of the queue's jobs run at once in the whole cluster
            (``None``: no cap).
        rate: At most this many of the queue's jobs start per second, on average (``None``:
            no limit). A token bucket of size ``burst`` refills at ``rate`` tokens a second;
            each claimed job takes one.
        burst: The bucket's size: how many jobs may start at once after a quiet spell
            (default: ``max(1, ceil(rate))``).
        per_tenant: Apply ``concurrency`` and ``rate`` to each tenant of the queue separately
            (jobs without a tenant share one allowance) rather than to the queue as a whole.
    """

    name: str
    concurrency: int | None = None
    rate: float | None = None
    burst: int | None = None
    per_tenant: bool = False

    def __attrs_post_init__(self) -> None:
        _check_limits(self)

    @property
    def limited(self) -> bool:
        """Whether the queue has a cap or a rate limit."""
        return self.concurrency is not None or self.rate is not None

    @property
    def bucket_size(self) -> int:
        """The token bucket's capacity (meaningful only with a ``rate``)."""
        if self.burst is not None:
            return self.burst
        return max(1, math.ceil(self.rate or 1.0))


@attrs.frozen(kw_only=True)
class QueueStats:
    """A queue as ``dispatch queues`` shows it."""

    name: str
    #: Its limits, or ``None`` when none were set.
    config: QueueConfig | None
    paused: bool
    #: Jobs waiting: pending or retrying (scheduled ones included).
    depth: int
    running: int
    #: Jobs of the queue that completed in the last minute.
    completed_last_minute: int


@attrs.frozen(kw_only=True)
class TokenBucket:
    """A token bucket's state as a store keeps it: tokens left at ``updated_at``."""

    tokens: float
    updated_at: datetime

    @classmethod
    def full(cls, config: QueueConfig, now: datetime) -> TokenBucket:
        """A new bucket: full."""
        return cls(tokens=float(config.bucket_size), updated_at=now)

    def refill(self, config: QueueConfig, now: datetime) -> TokenBucket:
        """The bucket at ``now``: topped up by ``rate`` per elapsed second, up to its size."""
        if config.rate is None:
            return self
        elapsed = max((now - self.updated_at).total_seconds(), 0.0)
        tokens = min(float(config.bucket_size), self.tokens + elapsed * config.rate)
        return TokenBucket(tokens=tokens, updated_at=max(now, self.updated_at))

    def available(self) -> int:
        """Whole tokens in the bucket: how many jobs may start now."""
        return math.floor(self.tokens + 1e-9)

    def take(self, n: int) -> TokenBucket:
        """The bucket after ``n`` jobs started."""
        return TokenBucket(tokens=self.tokens - n, updated_at=self.updated_at)
