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
from multiprocessing.synchronize import Event

from dispatch_core.models import Outcome, OutcomeKind, utcnow
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


def drain(url: str, worker_no: int, start: Event, out: str) -> None:
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
        finally:
            await store.close()

    seen = asyncio.run(main())
    with open(out, "w") as f:
        json.dump(seen, f)


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
