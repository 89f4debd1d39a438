"""A payload no store can hold is refused at enqueue with what and where, and nothing is
written: a lone surrogate (not UTF-8), NaN or infinity (``1e400`` in a JSON body parses as
infinity), an integer the json module cannot write, an object that is not JSON."""

from __future__ import annotations

from typing import Any

import pytest

from dispatch_core import Engine, JobState, PayloadError


@pytest.fixture
def engine() -> Engine:
    return Engine("memory://", load_entrypoints=False)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"to": ["ok", "\ud800"]}, r"lone surrogate '\\ud800' at \$\.to\[1\]"),
        ({"n": float("inf")}, r"the number inf at \$\.n"),
        ({"n": float("nan")}, r"the number nan at \$\.n"),
        ({"big": 10**5000}, r"an integer of about 5,000 digits at \$\.big"),
        ({"o": object()}, r"a value of type object at \$\.o"),
        ({"\udcff": 1}, r"lone surrogate '\\udcff' in a key at \$"),
    ],
)
async def test_an_unstorable_payload_is_refused_and_nothing_is_written(
    engine: Engine, payload: Any, problem: str
) -> None:
    @engine.job(name="anything")
    async def anything(p: dict[str, Any]) -> None: ...

    with pytest.raises(PayloadError, match=problem):
        await anything.aenqueue(payload)
    with pytest.raises(PayloadError, match=problem):
        await engine.aenqueue_many("anything", [{"fine": 1}, payload])
    assert sum((await engine.acount_jobs()).values()) == 0
    assert (await engine.acount_jobs())[JobState.PENDING] == 0


async def test_a_typed_float_field_refuses_infinity(engine: Engine) -> None:
    @engine.job(name="typed")
    async def typed(x: float) -> None: ...

    with pytest.raises(PayloadError, match=r"the number inf at \$"):
        await typed.aenqueue(float("inf"))
    job = await typed.aenqueue(1.5)
    assert job.payload == 1.5
