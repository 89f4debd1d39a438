"""Helpers shared by the conformance test classes (private: import from the suite modules)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from dispatch_core._ids import new_id
from dispatch_core.models import Job, NewJob, Outcome, OutcomeKind, utcnow
from dispatch_core.store import Store

StoreFactory = Callable[[], Store]
LEASE = 30.0


def make_new_job(
    name: str = "conformance.job",
    *,
    queue: str = "default",
    payload: Any = None,
    priority: int = 0,
    max_attempts: int = 4,
    run_at: datetime | None = None,
    unique_key: str | None = None,
    tenant: str | None = None,
    timeout: float | None = 300.0,
    headers: dict[str, str] | None = None,
) -> NewJob:
    """Build a :class:`NewJob` with test-friendly defaults."""
    now = utcnow()
    return NewJob(
        id=new_id("job"),
        name=name,
        queue=queue,
        payload={"n": 1} if payload is None else payload,
        priority=priority,
        max_attempts=max_attempts,
        timeout=timeout,
        run_at=run_at or now,
        created_at=now,
        unique_key=unique_key,
        tenant=tenant,
        headers=headers or {},
    )


def _run(factory: StoreFactory, body: Callable[[Store], Awaitable[None]]) -> None:
    async def main() -> None:
        store = factory()
        await store.open()
        await store.migrate()
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


async def _claim(store: Store, limit: int = 10, **kw: Any) -> list[Job]:
    args: dict[str, Any] = {
        "worker_id": "wkr_test",
        "queues": None,
        "names": None,
        "limit": limit,
        "lease_seconds": LEASE,
        "now": utcnow(),
    }
    args.update(kw)
    return await store.claim(**args)


async def _finish(
    store: Store,
    job: Job,
    kind: OutcomeKind = OutcomeKind.COMPLETED,
    *,
    now: datetime,
    error: str | None = None,
    run_at: datetime | None = None,
) -> bool:
    """Write one outcome for a claimed job with its own token; return whether it was written."""
    assert job.attempt_token is not None
    (ok,) = await store.finish(
        [
            Outcome(
                job_id=job.id,
                attempt_token=job.attempt_token,
                kind=kind,
                error=error,
                run_at=run_at,
            )
        ],
        now=now,
    )
    return ok


def _t0() -> datetime:
    """A whole-second instant a little ahead of now: jobs the test enqueues during the next
    seconds are due at it, and times derived from it survive any storage format exactly."""
    return utcnow().replace(microsecond=0) + timedelta(seconds=5)


def _s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def _near(a: datetime | None, b: datetime | None, tolerance: float = 0.002) -> bool:
    """Whether two instants are equal within ``tolerance`` seconds (both aware), or both None."""
    if a is None or b is None:
        return a is b
    assert a.tzinfo is not None, f"{a!r} is naive"
    return abs((a - b).total_seconds()) <= tolerance
