"""dispatch_core.storekit: the helpers every store shares."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from dispatch_core import JobState, NewJob
from dispatch_core.storekit import (
    as_utc,
    claim_order,
    compact_json,
    job_from_new,
    make_json_encoder,
)


def test_compact_json_matches_json_dumps_compact() -> None:
    value = {"a": [1, 2.5, None, True, "é\n\u2028"], "b": {"c": -1e300, "d": ""}}
    assert compact_json(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_the_strict_encoder_refuses_what_is_not_json() -> None:
    strict = make_json_encoder(allow_nan=False)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="JSON compliant"):
            strict({"x": [bad]})
    assert compact_json(math.inf) == "Infinity"  # the lenient one writes it


def test_job_from_new_is_the_pending_job_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    created = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=paris)
    new = NewJob(
        id="job_x",
        name="n",
        queue="q",
        payload={"a": 1},
        priority=3,
        max_attempts=4,
        timeout=None,
        run_at=datetime(2026, 1, 2, 3, 4, 5),  # naive: UTC
        created_at=created,
        tenant="acme",
        headers={"h": "v"},
    )
    job = job_from_new(new)
    assert job.state is JobState.PENDING
    assert job.attempt == 0
    assert job.created_at == job.updated_at == created
    assert job.created_at.tzinfo is UTC
    assert job.run_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert job.headers == {"h": "v"}
    assert job.headers is not new.headers
    assert claim_order(job) == (-3, job.run_at, "job_x")
    assert as_utc(created).tzinfo is UTC
