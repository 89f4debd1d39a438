"""The app the end-to-end tests run in real `dispatch worker` processes.

Every attempt appends ``job_id attempt pid`` to the ledger file named by $E2E_LEDGER (small
O_APPEND writes are atomic), so the test can prove who ran what.
"""

from __future__ import annotations

import os
import time

from dispatch_core import Engine, JobContext

engine = Engine(os.environ["DISPATCH_URL"])


def _record(ctx: JobContext) -> None:
    with open(os.environ["E2E_LEDGER"], "a") as ledger:
        ledger.write(f"{ctx.id} {ctx.attempt} {os.getpid()}\n")


@engine.job(name="e2e.record")
def record(ctx: JobContext, n: int) -> int:
    _record(ctx)
    time.sleep(0.005)
    return n


@engine.job(name="e2e.slow", max_retries=3)
def slow(ctx: JobContext, seconds: float) -> str:
    _record(ctx)
    time.sleep(seconds)
    return "done"
