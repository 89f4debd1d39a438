"""One chaos run: worker processes drain jobs while the suite kills them and crashes and
restarts the store's server (PostgreSQL, Redis); then the workers are stopped and the run is
judged by :func:`_harness.analyse`.

Jobs are enqueued as the workers take them (a backlog of about three jobs per slot), not all
up front: a rescued job becomes runnable "now", behind every job enqueued before it, so with
thousands queued the time from a kill to a rescued job's next start would measure the backlog,
not the rescue.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import attrs

from dispatch_core import DLQFilter, Engine, Job, JobFilter, JobState
from dispatch_core.models import utcnow

from ._harness import (
    POSTGRES_ASYNC_COMMIT,
    Findings,
    Kill,
    Outage,
    Plan,
    Restartable,
    WorkerPool,
    WorkerProcess,
    analyse,
    summary,
)
from .chaos_app import QUEUE, TICK, WORK, Ledger, make_engine

__all__ = ["JOBS", "WORKERS", "Run", "run"]

T = TypeVar("T")

JOBS = 2000
WORKERS = 4
CONCURRENCY = 4
#: Jobs kept runnable ahead of the workers.
BACKLOG = 3 * WORKERS * CONCURRENCY
#: Seconds (from the moment every first worker runs) after which the run is called off.
DEADLINE = 80.0
#: Seconds a worker may take to start, and the workers to stop after SIGTERM.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
#: Seconds the last cron jobs (and the last rescues) get to finish once the work is done.
SETTLE_TIMEOUT = 20.0
#: Seconds after the server is back during which a worker may still fail to start.
REFUSAL_GRACE = 10.0
_TICK = 0.25


@attrs.frozen(kw_only=True)
class Run:
    """What one run needs: the store, the ledger, the seed and where to put logs; with a
    ``server``, the run crashes it and starts it again once, mid-run."""

    store: str
    url: str
    ledger: str
    seed: int
    app_dir: Path
    tmp: Path
    server: Restartable | None = None


async def _try(call: Callable[[], Awaitable[T]], timeout: float = 5.0) -> T | None:
    """``await call()``, or ``None`` if it fails (the database may be down)."""
    try:
        return await asyncio.wait_for(call(), timeout)
    except Exception:
        return None


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(moment - time.monotonic(), 0.0))


class _Chaos:
    def __init__(self, run: Run, plan: Plan, engine: Engine, pool: WorkerPool) -> None:
        self.run = run
        self.plan = plan
        self.engine = engine
        self.pool = pool
        self.kills: list[Kill] = []
        self.outages: list[Outage] = []
        self.problems: list[str] = []
        self.expected: set[str] = set()
        self.args = ("--concurrency", str(CONCURRENCY), "--grace", "5")
        self.t0 = 0.0
        self.server_busy = False
        #: Replacements that exited at start because the database was down.
        self.refused = 0

    async def leader(self, timeout: float = 5.0) -> WorkerProcess | None:
        """The live worker that holds the leader lease, if the store can say in time."""
        store = self.engine.store
        leader_id = await _try(lambda: store.get_leader(now=utcnow()), timeout)
        if leader_id is None:
            return None
        found = self.pool.by_id(leader_id)
        if found is None:  # its start line not read yet: ask the registry for its pid
            rows = await _try(store.list_workers) or []
            pids = [w.pid for w in rows if w.id == leader_id]
            found = self.pool.by_pid(pids[0]) if pids else None
        if found is None or found.killed or found.proc.poll() is not None:
            return None
        return found

    async def start_workers(self) -> None:
        for slot in range(WORKERS):
            self.pool.spawn(slot, *self.args)
        deadline = time.monotonic() + START_TIMEOUT
        for w in list(self.pool.slots.values()):
            while w.find_id() is None:
                if w.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"worker pid {w.pid} did not start:\n{w.tail()}")
                await asyncio.sleep(0.05)

    def pick(self, i: int) -> WorkerProcess | None:
        """The victim of kill ``i`` by the plan's slot (another live one if it is down)."""
        # A replacement that has not started yet runs no job: kill one that does.
        alive = [w for w in self.pool.alive() if w.find_id()] or self.pool.alive()
        if not alive:
            return None
        slot = self.plan.victim_slots[i]
        chosen = self.pool.slots.get(slot)
        return chosen if chosen in alive else alive[slot % len(alive)]

    async def kill_on_schedule(self) -> None:
        leader_due = False  # the leader kill found no leader: try again at the next kill
        for i, offset in enumerate(self.plan.kill_offsets):
            await _sleep_until(self.t0 + offset)
            # Only to label the kill: do not let a database outage hold the schedule up.
            leader = await self.leader(timeout=1.0)
            victim: WorkerProcess | None
            if i == self.plan.leader_kill or leader_due:
                # Leadership may be changing hands: give it a few seconds to settle.
                for _ in range(16 if i == self.plan.leader_kill else 0):
                    if leader is not None:
                        break
                    await asyncio.sleep(0.5)
                    leader = await self.leader()
                leader_due = leader is None
                victim = leader or self.pick(i)
            else:
                victim = self.pick(i)
            if victim is None:
                continue
            self.kills.append(self.pool.kill(victim, leader=victim is leader))
            self.pool.spawn(victim.slot, *self.args)

    async def restart_database(self) -> None:
        server = self.run.server
        assert server is not None
        await _sleep_until(self.t0 + self.plan.restart_at)
        self.server_busy = True
        try:
            down = time.time()
            await asyncio.to_thread(server.crash)
            await asyncio.sleep(self.plan.down_for)
            await asyncio.to_thread(server.start)
            self.outages.append(Outage(down_at=down, up_at=time.time()))
        finally:
            self.server_busy = False

    async def enqueue(self, n: int, deadline: float) -> None:
        # The unique key makes a retried enqueue (did the first try commit?) harmless.
        while True:
            try:
                job = await self.engine.aenqueue(WORK, n, unique_key=f"work-{n}")
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(_TICK)
                continue
            self.expected.add(job.id)
            return

    async def produce(self, deadline: float) -> None:
        store = self.engine.store
        n = 0
        while n < JOBS:
            counts = await _try(lambda: store.count_jobs(queue=QUEUE))
            if counts is not None:
                backlog = counts.get(JobState.PENDING, 0) + counts.get(JobState.RETRYING, 0)
                for i in range(n, n + min(JOBS - n, BACKLOG - backlog)):
                    await self.enqueue(i, deadline)
                    n += 1
            await asyncio.sleep(0.1)

    def database_troubled(self) -> bool:
        """Whether the server is down, or came back less than :data:`REFUSAL_GRACE` ago."""
        recent = any(time.time() - o.up_at < REFUSAL_GRACE for o in self.outages)
        return self.server_busy or recent

    def replace_crashed(self) -> None:
        """Restart workers that exited by themselves, as a supervisor would; a worker that
        exits before it started because the database is down is expected (the CLI fails
        fast), any other exit is a problem."""
        for w in self.pool.exited_unasked():
            if w.find_id() is None and self.database_troubled():
                self.refused += 1
            else:
                self.problems.append(
                    f"worker pid {w.pid} ({w.worker_id}) exited on its own with code "
                    f"{w.proc.returncode}. Log tail:\n{w.tail()}"
                )
            if self.pool.slots.get(w.slot) is w:
                self.pool.spawn(w.slot, *self.args)

    async def settle(self) -> None:
        """Stop cron from firing, then wait for every job to be completed (bounded)."""
        store = self.engine.store
        await _try(lambda: self.engine.adisable_cron(TICK))
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            self.replace_crashed()
            counts = await _try(store.count_jobs)
            if counts is not None and set(counts) <= {JobState.COMPLETED}:
                return
            await asyncio.sleep(_TICK)


async def run(spec: Run) -> tuple[Findings, str]:
    """Run the scenario on ``spec``'s store; return the findings and the summary text."""
    plan = Plan.draw(spec.seed, workers=WORKERS)
    print(f"chaos [{spec.store}] seed {spec.seed}: {plan}")
    began = time.monotonic()
    ledger = Ledger(spec.ledger)
    await asyncio.to_thread(ledger.create)
    engine = make_engine(spec.url)
    await engine.amigrate()
    logs = spec.tmp / "logs"
    logs.mkdir()
    env = {
        **os.environ,
        "CHAOS_URL": spec.url,
        "CHAOS_LEDGER": spec.ledger,
        "CHAOS_SEED": str(spec.seed),
        "PYTHONUNBUFFERED": "1",
    }
    pool = WorkerPool(app="chaos_app:engine", cwd=spec.app_dir, env=env, logs=logs)
    chaos = _Chaos(spec, plan, engine, pool)
    tasks: list[asyncio.Task[None]] = []
    try:
        await chaos.start_workers()
        chaos.t0 = time.monotonic()
        origin = time.time()
        deadline = chaos.t0 + DEADLINE
        drained = None
        producing = asyncio.create_task(chaos.produce(deadline))
        tasks = [producing, asyncio.create_task(chaos.kill_on_schedule())]
        restarting = None
        if spec.server is not None:
            restarting = asyncio.create_task(chaos.restart_database())
            tasks.append(restarting)
        while True:
            chaos.replace_crashed()
            if producing.done() and producing.exception() is not None:
                raise AssertionError("enqueueing failed") from producing.exception()
            if time.monotonic() > deadline:
                counts = await _try(engine.store.count_jobs)
                chaos.problems.append(
                    f"not done after {DEADLINE:g}s: job counts {counts}; logs in {logs}"
                )
                break
            if producing.done():
                counts = await _try(lambda: engine.store.count_jobs(queue=QUEUE))
                if counts is not None and counts.get(JobState.COMPLETED, 0) >= JOBS:
                    drained = time.monotonic() - chaos.t0
                    break
            await asyncio.sleep(_TICK)
        if restarting is not None and chaos.server_busy:
            await restarting  # never leave the database down
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if spec.server is not None and restarting is not None:
            label = spec.server.label
            if not restarting.cancelled() and restarting.exception() is not None:
                raise AssertionError(f"restarting {label} failed") from restarting.exception()
            if not chaos.outages:
                chaos.problems.append(f"the run ended before {label} was restarted")
        await chaos.settle()
        chaos.problems += await asyncio.to_thread(pool.stop_all, timeout=STOP_TIMEOUT)

        executions = await asyncio.to_thread(ledger.executions)
        # Kept for a post-mortem: the private server goes away with the test.
        (spec.tmp / "ledger.json").write_text(json.dumps([e._asdict() for e in executions]))
        jobs: list[Job] = await engine.store.list_jobs(JobFilter(limit=1_000_000))
        dead = await engine.store.list_dlq(DLQFilter(limit=1_000_000))
        findings = analyse(
            expected=chaos.expected,
            jobs=jobs,
            executions=executions,
            kills=chaos.kills,
            outages=chaos.outages,
            dead_letters=len(dead),
            # Without a server there is no outage: the durability does not matter.
            durability=POSTGRES_ASYNC_COMMIT if spec.server is None else spec.server.durability,
        )
        findings.problems[:0] = chaos.problems
    finally:
        for task in tasks:
            task.cancel()
        pool.kill_all()
        await asyncio.to_thread(ledger.close)
        await engine.aclose()
        engine.close()
    text = summary(
        store=spec.store,
        plan=plan,
        findings=findings,
        workers=WORKERS,
        started=len(pool.everyone),
        refused=chaos.refused,
        outages=chaos.outages,
        origin=origin,
        drained=drained,
        seconds=time.monotonic() - began,
    )
    (spec.tmp / "summary.txt").write_text(text + f"\nlogs: {logs}\n")
    record = {
        "plan": attrs.asdict(plan),
        "origin": origin,
        "kills": [attrs.asdict(k) for k in chaos.kills],
        "outages": [attrs.asdict(o) for o in chaos.outages],
    }
    (spec.tmp / "run.json").write_text(json.dumps(record, indent=1))
    return findings, text
