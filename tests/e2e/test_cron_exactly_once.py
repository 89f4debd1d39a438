"""Cron fires each tick exactly once while the leadership moves between workers, on the
SQLite and PostgreSQL stores: three workers (each with its own engine and store connection,
as separate processes would have) share one database, and the leader is stopped and replaced
again and again while an every-second entry runs."""

from __future__ import annotations

import asyncio
import collections
from datetime import datetime

from dispatch_core import Engine, JobContext, Worker
from dispatch_core.testing import capture_events

RUN_SECONDS = 7.0


def _engine(url: str, ran: list[str]) -> Engine:
    engine = Engine(url, load_entrypoints=True)

    @engine.cron("* * * * * *", name="chaos.every-second")
    async def every_second(ctx: JobContext) -> None:
        ran.append(ctx.job.headers["dispatch-cron-tick"])

    return engine


async def test_each_tick_fires_once_across_leader_changes(store_url: str) -> None:
    ran: list[str] = []
    fired: list[str] = []
    engines = [_engine(store_url, ran) for _ in range(3)]
    await engines[0].amigrate()
    fast = {"heartbeat_interval": 0.2, "worker_timeout": 1.0, "rescue_interval": 0.1}
    workers: list[Worker] = []
    tasks: list[asyncio.Task[object]] = []
    handovers = 0

    def start(engine: Engine) -> None:
        w = engine.worker(concurrency=4, **fast)  # type: ignore[arg-type]
        workers.append(w)
        tasks.append(asyncio.ensure_future(w.run()))

    with (
        capture_events(engines[0]) as e0,
        capture_events(engines[1]) as e1,
        capture_events(engines[2]) as e2,
    ):
        for engine in engines:
            start(engine)
        loop = asyncio.get_running_loop()
        end = loop.time() + RUN_SECONDS
        while loop.time() < end:
            await asyncio.sleep(1.3)
            leader_id = await engines[0].aleader()
            for i, w in enumerate(workers):
                if w.id == leader_id and not tasks[i].done():
                    w.stop(grace=1)  # hands the lease over as it stops
                    await asyncio.wait_for(tasks[i], 10)
                    handovers += 1
                    start(w.engine)  # a replacement on the same engine
                    break
        await asyncio.sleep(1.2)  # let the last fired jobs run
        for w, t in zip(workers, tasks, strict=True):
            if not t.done():
                w.stop(grace=2)
        await asyncio.gather(*tasks)
        for capture in (e0, e1, e2):
            fired.extend(e.args["job_id"] for e in capture.of("cron_fired"))
    for engine in engines:
        await engine.aclose()

    assert handovers >= 3
    ticks = collections.Counter(ran)
    assert ticks, "the entry never fired"
    assert max(ticks.values()) == 1, f"ticks ran twice: {[t for t, n in ticks.items() if n > 1]}"
    assert len(fired) == len(set(fired)), "a tick was announced as fired twice"
    # Every second between the first and the last tick fired, or was folded into the next
    # fire after a leaderless moment (misfire policy "once"); the handovers here are graceful,
    # so at most a tick or two may fold.
    seconds = sorted(datetime.fromisoformat(t) for t in ticks)
    span = int((seconds[-1] - seconds[0]).total_seconds()) + 1
    assert len(seconds) >= span - 2, f"{span - len(seconds)} ticks of {span} were skipped"
