"""Wake-ups: a write that makes jobs runnable wakes workers in other processes through pub/sub."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

from dispatch_core import Engine
from dispatch_core.models import utcnow
from dispatch_core.testing import make_new_job
from dispatch_plugins.redis import RedisStore


async def _wait(ev: asyncio.Event, timeout: float) -> bool:
    try:
        await asyncio.wait_for(ev.wait(), timeout)
    except TimeoutError:
        return False
    return True


async def test_listener_wakes_on_writes_of_another_instance(redis_url: str) -> None:
    listening, writer = RedisStore(redis_url), RedisStore(redis_url)
    await listening.open()
    await writer.open()
    woken = asyncio.Event()
    stop = await listening.listen(woken.set)
    try:
        await writer.enqueue([make_new_job()])
        assert await _wait(woken, 5)
        # a retried outcome wakes too
        woken.clear()
        (job,) = await writer.claim(
            worker_id="w", queues=None, names=None, limit=1, lease_seconds=30, now=utcnow()
        )
        assert not woken.is_set()
        from dispatch_core.models import Outcome, OutcomeKind

        assert job.attempt_token is not None
        await writer.finish(
            [Outcome(job_id=job.id, attempt_token=job.attempt_token, kind=OutcomeKind.RETRY)],
            now=utcnow(),
        )
        assert await _wait(woken, 5)
        # a queue resumed wakes too
        woken.clear()
        await writer.pause_queue("q", paused=True)
        await writer.pause_queue("q", paused=False)
        assert await _wait(woken, 5)
    finally:
        await stop()
        await listening.close()
        await writer.close()


async def test_a_job_enqueued_by_another_process_is_picked_up(redis_url: str) -> None:
    """The worker polls every 60 s here: only the pub/sub message can wake it in time."""
    engine = Engine(redis_url)
    done = asyncio.Event()
    got: list[int] = []

    @engine.job(name="ping")
    async def ping(n: int) -> None:
        got.append(n)
        done.set()

    worker = engine.worker(concurrency=2, poll_interval=60)
    running = asyncio.create_task(worker.run())
    try:
        await engine.aopen()
        # let the worker reach its idle wait, with the longest backoff it would use
        await asyncio.sleep(0.5)
        child = textwrap.dedent(
            f"""
            from dispatch_core import Engine
            engine = Engine({redis_url!r})

            @engine.job(name="ping")
            def ping(n: int) -> None: ...

            ping.enqueue(42)
            engine.close()
            """
        )
        proc = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", child], capture_output=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr.decode()
        assert await _wait(done, 20), "the worker was not woken"
        assert got == [42]
    finally:
        worker.stop()
        await asyncio.wait_for(running, 20)
        await engine.aclose()
