"""The app of the stalled-worker tests, run in real `dispatch worker` processes.

Every attempt appends ``job_id attempt pid event`` to the ledger named by $E2E_LEDGER (small
O_APPEND writes are atomic), so a test can prove who ran what, and how often.
"""

from __future__ import annotations

import os
import time

from dispatch_core import Engine, JobContext

engine = Engine(os.environ["DISPATCH_URL"])


def _record(ctx: JobContext, event: str) -> None:
    with open(os.environ["E2E_LEDGER"], "a") as ledger:
        ledger.write(f"{ctx.id} {ctx.attempt} {os.getpid()} {event}\n")


@engine.job(name="stall.block", max_retries=0, priority=10)
async def block(ctx: JobContext, seconds: float) -> str:
    """An async handler that blocks its worker's event loop: the mistake under test."""
    _record(ctx, "start")
    time.sleep(seconds)  # noqa: ASYNC251 -- the mistake under test
    _record(ctx, "end")
    return "done"


@engine.job(name="stall.quick", max_retries=0)
async def quick(ctx: JobContext, n: int) -> int:
    _record(ctx, "run")
    return n


@engine.job(name="stall.long", max_retries=2)
def long(ctx: JobContext, seconds: float) -> str:
    """A well-behaved sync job that takes a while (it runs in a thread)."""
    _record(ctx, "start")
    time.sleep(seconds)
    return "done"
