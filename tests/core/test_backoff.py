from __future__ import annotations

import pytest

from dispatch_core import Constant, Exponential, ExponentialJitter, Linear
from dispatch_core.backoff import DEFAULT_BACKOFF


def test_constant() -> None:
    assert [Constant(interval=2).delay(n) for n in (1, 5, 50)] == [2, 2, 2]


def test_linear_caps() -> None:
    b = Linear(initial=1.5, max=4)
    assert [b.delay(n) for n in (1, 2, 3, 4)] == [1.5, 3.0, 4, 4]


def test_exponential_doubles_and_caps() -> None:
    b = Exponential(initial=1, max=60)
    assert [b.delay(n) for n in (1, 2, 3, 6, 7, 10_000)] == [1, 2, 4, 32, 60, 60]


def test_full_jitter_stays_in_range() -> None:
    b = ExponentialJitter(initial=1, max=60)
    for attempt, ceiling in ((1, 1), (3, 4), (20, 60)):
        samples = [b.delay(attempt) for _ in range(300)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling / 2  # really spread, not a constant


def test_default_is_full_jitter_one_second_to_a_minute() -> None:
    assert ExponentialJitter(initial=1.0, max=60.0) == DEFAULT_BACKOFF


def test_negative_values_are_refused() -> None:
    with pytest.raises(ValueError, match="interval must be >= 0"):
        Constant(interval=-1)
