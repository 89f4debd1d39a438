"""A program that enqueues and returns without closing its engine exits promptly (SQLite).

The PostgreSQL store hung at exit about one run in ten (its pool's tasks swallowed the
cancellation of ``asyncio.run``; see tests/plugins/postgres/test_exit.py). The SQLite store
does not; this keeps it so. Each run is a fresh process with a deadline: a hang is a failure.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

#: Enqueue one job from ``asyncio.run``, then one from blocking code, never closing the
#: engine.
SCRIPT = """
import asyncio, sys
from dispatch_core import Engine

engine = Engine(sys.argv[1])

@engine.job(name="noop")
async def noop(n: int) -> None: ...

async def main() -> None:
    await noop.aenqueue(1)

asyncio.run(main())
noop.enqueue(2)
print("exited")
"""

#: Seconds a run may take; one that has not exited by then is hung.
RUN_TIMEOUT = 20.0
RUNS = 5


def test_asyncio_run_then_sync_enqueue_without_close_exits(db_url: str) -> None:
    for i in range(1, RUNS + 1):
        try:
            done = subprocess.run(
                [sys.executable, "-c", SCRIPT, db_url],
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"run {i} of {RUNS} did not exit within {RUN_TIMEOUT:g}s")
        assert done.returncode == 0, f"run {i} failed: {done.stderr}"
        assert done.stdout.strip() == "exited", done.stdout
