"""A program that enqueues and returns without closing its engine exits promptly.

``asyncio.run()`` ends by cancelling the tasks left in its loop and waiting for them. The
pool's maintenance tasks caught that cancellation while connecting (the pool grows in the
background while the first call waits) and went back to waiting for work, so about one run
in ten hung forever after ``main()`` returned. The store now closes its pool when the loop
ends (a custodian task, cancelled with the others).

A hang is a failure: each run is a fresh process with a deadline.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from dispatch_plugins.postgres import PostgresStore

from .conftest import with_params

#: Enqueue one job from ``asyncio.run`` (and, with ``sync``, one from blocking code after
#: it), never closing the engine.
SCRIPT = """
import asyncio, sys
from dispatch_core import Engine

engine = Engine(sys.argv[1])

@engine.job(name="noop")
async def noop(n: int) -> None: ...

async def main() -> None:
    await noop.aenqueue(1)

asyncio.run(main())
if sys.argv[2] == "sync":
    noop.enqueue(2)
print("exited")
"""

#: Seconds a run may take; one that has not exited by then is hung.
RUN_TIMEOUT = 20.0


def run_until_hang(url: str, mode: str, runs: int) -> None:
    """Run :data:`SCRIPT` ``runs`` times; fail at the first run that hangs or fails."""
    for i in range(1, runs + 1):
        try:
            done = subprocess.run(
                [sys.executable, "-c", SCRIPT, url, mode],
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr
            pytest.fail(
                f"run {i} of {runs} ({mode}) did not exit within {RUN_TIMEOUT:g}s after "
                f"main() returned; stderr: {err!r}"
            )
        assert done.returncode == 0, f"run {i} ({mode}) failed: {done.stderr}"
        assert done.stdout.strip() == "exited", done.stdout


def test_asyncio_run_without_close_exits_with_connections_still_opening(pg_url: str) -> None:
    # min_size=4: the pool opens four connections in the background and the call takes the
    # first one, so connections are being made when main() returns in nearly every run
    # (before the fix, 18 runs in 20 hung; the first hang came by the third run).
    run_until_hang(with_params(pg_url, min_size="4"), "async", 12)


def test_asyncio_run_then_sync_enqueue_without_close_exits(pg_url: str) -> None:
    # The default pool, as the issue reported it (about one hang in ten before the fix),
    # then the blocking producer's pool and watchdog thread, also left open.
    run_until_hang(pg_url, "sync", 10)


async def test_close_leaves_no_task_of_the_store_behind(pg_url: str) -> None:
    before = asyncio.all_tasks()
    store = PostgresStore(with_params(pg_url, min_size="2"))
    await store.open()
    names = {t.get_name() for t in asyncio.all_tasks() - before}
    assert "dispatch-postgres pool custodian" in names
    await store.close()
    await asyncio.sleep(0)  # let the cancelled tasks finish
    left = [t.get_name() for t in asyncio.all_tasks() - before if not t.done()]
    assert left == []
