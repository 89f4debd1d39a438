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
from multiprocessing.synchronize import Barrier, Event

from dispatch_core.models import Outcome, OutcomeKind, utcnow
from dispatch_core.states import JobState
from dispatch_core.testing import make_new_job
from dispatch_plugins.sqlite import SQLiteStore
from dispatch_plugins.sqlite.sync import SQLiteSyncStore
from dispatch_plugins.sqlite.url import parse_url


def migrate(url: str, start: Event, out: str) -> None:
    """Open and migrate once ``start`` is set; write the applied names to ``out``."""

    async def main() -> list[str]:
        store = SQLiteStore(url)
        start.wait()
        await store.open()
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
        store = SQLiteStore(url)
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
                    return seen
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
                # Stand-in for running the handlers. Without it one process can hold the
                # write lock back to back and starve the others (SQLite's busy handler sleeps
                # and retries; it does not queue), and the test would not race at all.
                await asyncio.sleep(rng.random() * 0.002)
        finally:
            await store.close()

    seen = asyncio.run(main())
    with open(out, "w") as f:
        json.dump(seen, f)


def drain_limited(url: str, worker_no: int, start: Event, out: str, seconds: float) -> None:
    """Claim from the ``limited`` queue for ``seconds``, holding each job a moment; after each
    claim, record how many of the queue's jobs the database says are running."""

    async def main() -> dict[str, list[int] | int]:
        rng = random.Random(worker_no)
        store = SQLiteStore(url)
        await store.open()
        claimed = 0
        running_seen: list[int] = []
        start.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        try:
            while loop.time() < deadline:
                jobs = await store.claim(
                    worker_id=f"wkr_{worker_no}",
                    queues=None,
                    names=None,
                    limit=rng.randint(1, 4),
                    lease_seconds=60,
                    now=utcnow(),
                )
                claimed += len(jobs)
                counts = await store.count_jobs(queue="limited")
                running_seen.append(counts.get(JobState.RUNNING, 0))
                await asyncio.sleep(rng.random() * 0.003)
                await store.finish(
                    [
                        Outcome(
                            job_id=j.id,
                            attempt_token=j.attempt_token or "",
                            kind=OutcomeKind.COMPLETED,
                        )
                        for j in jobs
                    ],
                    now=utcnow(),
                )
        finally:
            await store.close()
        return {"claimed": claimed, "running_seen": running_seen}

    result = asyncio.run(main())
    with open(out, "w") as f:
        json.dump(result, f)


def produce(url: str, count: int) -> None:
    """Enqueue ``count`` jobs one at a time with the blocking producer."""
    sync = SQLiteSyncStore(parse_url(url))
    try:
        for i in range(count):
            sync.enqueue([make_new_job("produced", payload={"i": i})])
    finally:
        sync.close()


if __name__ == "__main__":  # python _mp_helpers.py produce URL COUNT
    produce(sys.argv[2], int(sys.argv[3]))
