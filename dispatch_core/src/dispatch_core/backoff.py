"""Retry backoff strategies: how long a failed job waits before its next attempt."""

from __future__ import annotations

import random
from typing import Protocol, runtime_checkable

import attrs

__all__ = ["Backoff", "Constant", "Linear", "Exponential", "ExponentialJitter", "DEFAULT_BACKOFF"]


@runtime_checkable
class Backoff(Protocol):
    """A strategy: ``delay(attempt)`` is the wait in seconds after failed attempt ``attempt``
    (1-based)."""

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt``."""
        ...


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


@attrs.frozen(kw_only=True)
class Constant:
    """Always the same wait."""

    #: Seconds between attempts.
    interval: float = attrs.field(default=1.0, validator=_positive)

    def delay(self, attempt: int) -> float:
        return self.interval


@attrs.frozen(kw_only=True)
class Linear:
    """``initial * attempt``, capped at ``max``."""

    initial: float = attrs.field(default=1.0, validator=_positive)
    max: float = attrs.field(default=60.0, validator=_positive)

    def delay(self, attempt: int) -> float:
        return min(self.initial * attempt, self.max)


@attrs.frozen(kw_only=True)
class Exponential:
    """``initial * 2**(attempt-1)``, capped at ``max``."""

    initial: float = attrs.field(default=1.0, validator=_positive)
    max: float = attrs.field(default=60.0, validator=_positive)

    def delay(self, attempt: int) -> float:
        # Cap the exponent so huge attempt numbers cannot overflow the float.
        return min(self.initial * 2.0 ** min(attempt - 1, 62), self.max)


@attrs.frozen(kw_only=True)
class ExponentialJitter:
    """Full jitter: uniform in ``[0, min(initial * 2**(attempt-1), max)]``. The default,
    because it spreads a burst of failures instead of retrying them in lockstep."""

    initial: float = attrs.field(default=1.0, validator=_positive)
    max: float = attrs.field(default=60.0, validator=_positive)

    def delay(self, attempt: int) -> float:
        ceiling = min(self.initial * 2.0 ** min(attempt - 1, 62), self.max)
        return random.uniform(0.0, ceiling)


#: The engine's default: exponential with full jitter, 1 s initial, 60 s cap.
DEFAULT_BACKOFF: Backoff = ExponentialJitter()
