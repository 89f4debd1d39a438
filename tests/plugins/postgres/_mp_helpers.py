"""Functions run in spawned processes by the multi-process tests.

They live in a module of their own (imported by its plain name, with this directory on
``sys.path``) because a spawned child must import its target by name, which pytest's test
modules do not allow.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from multiprocessing.synchronize import Barrier, Event

from dispatch_core.models import Outcome, OutcomeKind, utcnow
from dispatch_core.states import JobState
from dispatch_core.testing import make_new_job
from dispatch_plugins.postgres import PostgresStore


def migrate(url: str, start: Event, out: str) -> None:
    """Open and migrate once ``start`` is set; write the applied names to ``out``."""

    async def main() -> list[str]:
        store = PostgresStore(url)
        await store.open()
        start.wait()
        try:
            return await store.migrate()
        finally:
            await store.close()

    applied = asyncio.run(main())
    with open(out, "w") as f:
        json.dump(applied, f)


def drain(url: str, worker_no: int, start: Event | Barrier, out: str) -> None:
    """Claim (random batch sizes) and complete jobs until none is left; record each attempt."""

    async def main() -> list[tuple[str, int]]:
        rng = random.Random(worker_no)
        store = PostgresStore(url)
        await store.open()
        seen: list[tuple[str, int]] = []
        start.wait()
        try:
            while True:
                claimed = await store.claim(
                    worker_id=f"wkr_{worker_no}",
                    queues=None,
                    names=None,
                    limit=rng.randint(1, 8),
                    lease_seconds=60,
                    now=utcnow(),
                )
                if not claimed:
                    # SKIP LOCKED passes over rows another claimer holds at this instant: an
                    # empty claim ends the drain only once nothing is left to run.
                    counts = await store.count_jobs()
                    if not counts.get(JobState.PENDING) and not counts.get(JobState.RETRYING):
                        return seen
                    await asyncio.sleep(0.01)
                    continue
                seen.extend((j.id, j.attempt) for j in claimed)
                written = await store.finish(
                    [
                        Outcome(
                            job_id=j.id,
                            attempt_token=j.attempt_token or "",
                            kind=OutcomeKind.COMPLETED,
                            result={"by": worker_no},
                        )
                        for j in claimed
                    ],
                    now=utcnow(),
                )
                if not all(written):
                    raise AssertionError(f"worker {worker_no} lost a fenced write: {written}")
        finally:
            await store.close()

    seen = asyncio.run(main())
    with open(out, "w") as f:
        json.dump(seen, f)


def drain_limited(url: str, worker_no: int, start: Event, out: str) -> None:
    """Claim and complete jobs until none is left, holding each batch a moment; record, per
    job, its queue, tenant, the ``now`` of its claim, and the wall-clock interval in which
    this process held it (inside the interval the store had it running)."""

    async def main() -> list[tuple[str, str | None, float, float, float]]:
        rng = random.Random(worker_no)
        store = PostgresStore(url)
        await store.open()
        held: list[tuple[str, str | None, float, float, float]] = []
        idle = 0
        start.wait()
        try:
            while idle < 200:  # about a second with nothing claimable: drained
                now = utcnow()
                claimed = await store.claim(
                    worker_id=f"wkr_{worker_no}",
                    queues=None,
                    names=None,
                    limit=rng.randint(1, 6),
                    lease_seconds=60,
                    now=now,
                )
                if not claimed:
                    idle += 1
                    await asyncio.sleep(0.005)
                    continue
                idle = 0
                got = time.time()
                await asyncio.sleep(rng.uniform(0.001, 0.01))
                gone = time.time()
                held.extend((j.queue, j.tenant, now.timestamp(), got, gone) for j in claimed)
                written = await store.finish(
                    [
                        Outcome(
                            job_id=j.id,
                            attempt_token=j.attempt_token or "",
                            kind=OutcomeKind.COMPLETED,
                        )
                        for j in claimed
                    ],
                    now=utcnow(),
                )
                if not all(written):
                    raise AssertionError(f"worker {worker_no} lost a fenced write: {written}")
        finally:
            await store.close()
        return held

    held = asyncio.run(main())
    with open(out, "w") as f:
        json.dump(held, f)


def produce(url: str, count: int) -> None:
    """Enqueue ``count`` jobs one at a time with the blocking producer."""
    sync = PostgresStore(url).sync()
    try:
        for i in range(count):
            sync.enqueue([make_new_job("produced", payload={"i": i})])
    finally:
        sync.close()


if __name__ == "__main__":  # python _mp_helpers.py produce URL COUNT
    produce(sys.argv[2], int(sys.argv[3]))
