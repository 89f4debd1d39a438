from __future__ import annotations

import pytest

from dispatch_core import InvalidTransitionError, JobState
from dispatch_core.states import TRANSITIONS, check_transition

LEGAL = {
    ("pending", "running"),
    ("pending", "cancelled"),
    ("retrying", "running"),
    ("retrying", "cancelled"),
    ("running", "completed"),
    ("running", "retrying"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("running", "pending"),
    ("failed", "pending"),
    ("cancelled", "pending"),
}


@pytest.mark.parametrize("current", list(JobState))
@pytest.mark.parametrize("target", list(JobState))
def test_transition_table(current: JobState, target: JobState) -> None:
    legal = (current.value, target.value) in LEGAL
    assert (target in TRANSITIONS[current]) is legal
    if legal:
        check_transition("job_x", current, target)
    else:
        with pytest.raises(
            InvalidTransitionError, match=f"from {current.value!r} to {target.value!r}"
        ):
            check_transition("job_x", current, target)


def test_completed_is_final() -> None:
    assert TRANSITIONS[JobState.COMPLETED] == frozenset()
