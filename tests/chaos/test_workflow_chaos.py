"""Workflow chaos: three worker processes drive ~150 workflow runs (steps, a durable sleep, a
wait for an event the test sends) while the test ``kill -9``-s a random worker every few
seconds and starts a replacement. Then every run completed with the right output, no
checkpointed step ran again, a step ran more than once only when its worker was killed during
it (or after it, before its checkpoint was written), and no sleep was restarted.

Steps record each execution in a ledger outside Dispatch (:mod:`.chaos_workflow_app`). The
kill schedule and the events' timing come from the seed (``DISPATCH_TEST_CHAOS_SEED``); the
figures appear in the "chaos" section of the terminal summary and in ``summary.txt`` next to
the workers' logs in the test's ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest

from dispatch_core import Engine, RunState, StepKind, StepRecord, StepState, WorkflowRun
from dispatch_core.models import utcnow

from ._harness import ChaosCluster, ChaosRedis, Kill, WorkerPool, WorkerProcess, within
from .chaos_workflow_app import (
    EVENT,
    QUEUE,
    SLEEP,
    SLEEP_SECONDS,
    STEPS,
    WORKFLOW,
    StepEntry,
    StepLedger,
    event_payload,
    expected_output,
    make_engine,
)

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

T = TypeVar("T")

RUNS = 150
WORKERS = 3
#: Runs are started evenly over this many seconds, so kills find them at every stage.
START_OVER = 10.0
#: Kills every 2-3.5 s from about 2 s until this many seconds after the start.
KILLS_UNTIL = 13.0
#: Share of runs whose event is sent soon after the start, before the run waits for it (the
#: others get theirs once seen waiting).
EARLY_EVENTS = 0.3
#: Seconds (from the start) after which the run is called off.
DEADLINE = 45.0
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
#: Fewer parked sleeps seen by the test's polling than this share makes the sleep check moot.
MIN_SLEEPS_SEEN = 0.8
#: The durable timer check: a sleep's wake-up is its start plus the duration, to this slop.
SLEEP_SLOP = 0.05
#: Worker settings: a short heartbeat and timeout so that a killed worker's drivers are
#: rescued within ~5 s, and a short poll, since the workers of a SQLite store are not notified.
WORKER_ARGS = (
    "--queue", QUEUE, "--concurrency", "10", "--grace", "5", "--heartbeat", "1",
    "--worker-timeout", "4", "--poll-interval", "0.2",
)  # fmt: skip
_TICK = 0.2
_EXPECTED_TIMELINE = [
    ("reserve", StepKind.STEP),
    ("charge", StepKind.STEP),
    (SLEEP, StepKind.SLEEP),
    ("pack", StepKind.STEP),
    (EVENT, StepKind.EVENT),
    ("ship", StepKind.STEP),
]


# -- the verdict ------------------------------------------------------------------------------


@attrs.define
class Verdict:
    problems: list[str] = attrs.Factory(list)
    runs: int = 0
    completed: int = 0
    executions: int = 0
    #: Executions beyond the checkpointed one, by cause.
    extras: Counter[str] = attrs.Factory(Counter)
    #: Runs that had at least one step run again.
    runs_rerun: int = 0
    #: Kills that caught at least one step mid-way.
    kills_mid_step: int = 0
    sleeps_seen: int = 0


def _killer(e: StepEntry, kills: Sequence[Kill]) -> Kill | None:
    """The kill of ``e``'s process after ``e`` started, if any."""
    for k in kills:
        if k.pid == e.pid and e.started_at <= k.at:
            return k
    return None


def _show(e: StepEntry) -> str:
    end = f"{e.finished_at:.3f}" if e.finished_at is not None else "never"
    return f"{e.step} exec {e.exec_id[:8]} pid {e.pid} started {e.started_at:.3f} finished {end}"


def analyse(
    *,
    expected: Mapping[str, int],
    runs: Mapping[str, WorkflowRun],
    timelines: Mapping[str, Sequence[StepRecord]],
    entries: Sequence[StepEntry],
    kills: Sequence[Kill],
    first_parks: Mapping[str, datetime],
) -> Verdict:
    """Judge the run from what it left behind.

    Args:
        expected: Run id -> the ``n`` it was started with.
        runs: The runs as stored at the end.
        timelines: Each run's history.
        entries: The ledger of step executions.
        kills: The test's kills.
        first_parks: Run id -> ``wake_at`` of its sleep when the test first saw it parked.
    """
    v = Verdict(runs=len(expected), executions=len(entries))
    by_step: dict[tuple[str, str], list[StepEntry]] = defaultdict(list)
    for e in entries:
        by_step[(e.run_id, e.step)].append(e)
    strays = {run_id for run_id, _ in by_step} - set(expected)
    if strays:
        v.problems.append(f"ledger entries of {len(strays)} unknown runs: {sorted(strays)[:3]}")
    rerun: set[str] = set()
    for run_id, n in sorted(expected.items(), key=lambda item: item[1]):
        run = runs.get(run_id)
        if run is None:
            v.problems.append(f"run {run_id} (n={n}) is not in the store")
            continue
        if run.state is not RunState.COMPLETED:
            why = (run.error or "").splitlines()[:1]
            v.problems.append(f"run {run_id} (n={n}) is {run.state.value} {why}")
            continue
        v.completed += 1
        output: Any = run.output
        got = {k: val for k, val in output.items() if k != "execs"}
        if got != expected_output(n):
            v.problems.append(f"run {run_id} (n={n}) output {got} != {expected_output(n)}")
        timeline = list(timelines.get(run_id, []))
        shape = [(r.name, r.kind) for r in timeline]
        if shape != _EXPECTED_TIMELINE or any(r.state is not StepState.COMPLETED for r in timeline):
            v.problems.append(
                f"run {run_id} (n={n}) timeline "
                f"{[(r.name, r.kind.value, r.state.value) for r in timeline]}"
            )
            continue
        record = {r.name: r for r in timeline}

        # Steps: the checkpointed execution, and nothing else but executions cut short by a kill.
        for step in STEPS:
            chosen = output["execs"][step]
            checkpoint = record[step]
            done_at = checkpoint.finished_at.timestamp() if checkpoint.finished_at else 0.0
            runs_of = by_step.get((run_id, step), [])
            winners = [e for e in runs_of if e.exec_id == chosen]
            if not winners or winners[0].finished_at is None:
                v.problems.append(
                    f"run {run_id} step {step}: its checkpoint names execution {chosen}, "
                    f"which the ledger {'never saw finish' if winners else 'lacks'}"
                )
                continue
            winner = winners[0]
            for e in runs_of:
                if e is winner:
                    continue
                if e.started_at > done_at or e.started_at > winner.started_at:
                    v.problems.append(
                        f"run {run_id}: a completed step ran again: {_show(e)} after the "
                        f"checkpointed {_show(winner)} (checkpoint at {done_at:.3f})"
                    )
                    v.extras["ran after its checkpoint"] += 1
                    continue
                kill = _killer(e, kills)
                if kill is None:
                    v.problems.append(
                        f"run {run_id}: step ran twice without a kill: {_show(e)}, then the "
                        f"checkpointed {_show(winner)}"
                    )
                    v.extras["unexplained"] += 1
                elif e.finished_at is None:
                    v.extras["killed mid-step"] += 1
                elif e.finished_at <= kill.at:
                    v.extras["killed after the step, before its checkpoint"] += 1
                else:
                    v.problems.append(f"run {run_id}: impossible ledger entry {_show(e)}")
                rerun.add(run_id)

        # The durable sleep: one wake-up time, set at the first park, and nothing after the
        # sleep ran before it.
        sleep = record[SLEEP]
        if sleep.wake_at is None:
            v.problems.append(f"run {run_id}: the sleep record has no wake_at")
            continue
        wake = sleep.wake_at.timestamp()
        span = wake - sleep.started_at.timestamp()
        if abs(span - SLEEP_SECONDS) > SLEEP_SLOP:
            v.problems.append(
                f"run {run_id}: the sleep started at {sleep.started_at} wakes at "
                f"{sleep.wake_at}: {span:.3f}s, not {SLEEP_SECONDS}s"
            )
        first = first_parks.get(run_id)
        if first is not None:
            v.sleeps_seen += 1
            if first != sleep.wake_at:
                v.problems.append(
                    f"run {run_id}: the sleep was restarted: first parked until {first}, "
                    f"its record says {sleep.wake_at}"
                )
        early = [e for e in by_step.get((run_id, "pack"), []) if e.started_at < wake]
        if early:
            v.problems.append(
                f"run {run_id}: ran before its sleep ended at {wake:.3f}: {_show(early[0])}"
            )
        if run.finished_at is None or run.finished_at < sleep.wake_at:
            v.problems.append(
                f"run {run_id}: finished at {run.finished_at}, before its sleep ended "
                f"({sleep.wake_at})"
            )
        if record[EVENT].output != event_payload(n):
            v.problems.append(f"run {run_id}: the wait got {record[EVENT].output!r}")

    v.runs_rerun = len(rerun)
    cut = {e.pid for e in entries if e.finished_at is None}
    v.kills_mid_step = sum(1 for k in kills if k.pid in cut)
    if kills and not v.kills_mid_step:
        v.problems.append("no kill caught a step mid-way: the test proved nothing")
    if v.completed and v.sleeps_seen < MIN_SLEEPS_SEEN * v.completed:
        v.problems.append(
            f"the test saw only {v.sleeps_seen} of {v.completed} sleeps parked: too few to "
            "tell whether sleeps were restarted"
        )
    return v


def summary(
    *, store: str, seed: int, v: Verdict, kills: Sequence[Kill], started: int, origin: float,
    early: int, seconds: float, drained: float | None,
) -> str:  # fmt: skip
    causes = ", ".join(f"{c} {n}" for c, n in sorted(v.extras.items())) or "none"
    extras = sum(v.extras.values())
    at = ", ".join(
        f"+{k.at - origin:.1f}s{' leader' if k.leader else ''}" for k in kills
    )  # fmt: skip
    lines = [
        f"workflow chaos [{store}] seed {seed}: {'PASS' if not v.problems else 'FAIL'} "
        f"in {seconds:.1f}s",
        f"  runs         {v.runs} started, {v.completed} completed"
        + (f" in {drained:.1f}s" if drained is not None else ""),
        f"  workers      {WORKERS} at a time, {started} started, {len(kills)} killed "
        f"({v.kills_mid_step} mid-step): {at}",
        f"  steps        {v.executions} executions = {v.executions - extras} checkpointed + "
        f"{extras} re-run because killed ({causes}); {v.runs_rerun} runs affected",
        f"  sleeps       {v.sleeps_seen} parks seen by the test, none restarted"
        if not any("sleep" in p for p in v.problems)
        else f"  sleeps       {v.sleeps_seen} parks seen by the test",
        f"  events       {early} sent before the run waited, {v.runs - early} while it waited",
    ]
    if v.problems:
        lines.append(f"  problems     {len(v.problems)}:")
        lines += [f"    - {p}" for p in v.problems[:30]]
    return "\n".join(lines)


# -- the scenario -----------------------------------------------------------------------------


async def _try(call: Callable[[], Awaitable[T]], timeout: float = 5.0) -> T | None:
    try:
        return await asyncio.wait_for(call(), timeout)
    except Exception:
        return None


@attrs.frozen(kw_only=True)
class Spec:
    store: str
    url: str
    ledger: str
    seed: int
    root: Path
    tmp: Path


class Scenario:
    def __init__(self, spec: Spec, engine: Engine, pool: WorkerPool) -> None:
        self.spec = spec
        self.engine = engine
        self.pool = pool
        rng = random.Random(spec.seed)
        offsets = [rng.uniform(1.5, 2.5)]
        while offsets[-1] + 2.0 < KILLS_UNTIL:
            offsets.append(offsets[-1] + rng.uniform(2.0, 3.5))
        self.kill_offsets = offsets
        self.victims = [rng.randrange(WORKERS) for _ in offsets]
        self.early = {n for n in range(RUNS) if rng.random() < EARLY_EVENTS}
        self.early_delay = {n: rng.uniform(0.0, 1.0) for n in self.early}
        self.kills: list[Kill] = []
        #: Set when the scenario ends. The watcher stops on it rather than on cancellation
        #: alone: Python 3.11's wait_for (in _try) can swallow a cancel that lands as the
        #: store call returns, and a loop relying on it then never ends.
        self.stopping = False
        self.problems: list[str] = []
        self.runs: dict[str, int] = {}
        self.first_parks: dict[str, datetime] = {}
        self.sent: set[str] = set()
        self.t0 = 0.0

    async def start_workers(self) -> None:
        for slot in range(WORKERS):
            self.pool.spawn(slot, *WORKER_ARGS)
        deadline = time.monotonic() + START_TIMEOUT
        for w in list(self.pool.slots.values()):
            while w.find_id() is None:
                if w.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"worker pid {w.pid} did not start:\n{w.tail()}")
                await asyncio.sleep(0.05)

    async def send(self, run_id: str, n: int) -> None:
        if run_id in self.sent:
            return
        self.sent.add(run_id)
        for _ in range(20):
            try:
                reached = await self.engine.asend_event(EVENT, event_payload(n), run_id=run_id)
            except Exception as exc:
                error: Exception | None = exc
                await asyncio.sleep(_TICK)
                continue
            if reached != [run_id]:
                self.problems.append(f"the event for run {run_id} reached {reached}")
            return
        self.problems.append(f"could not send the event to run {run_id}: {error!r}")

    async def start_runs(self) -> None:
        definition = self.engine.workflows[WORKFLOW]
        sends: list[asyncio.Task[None]] = []
        for n in range(RUNS):
            await asyncio.sleep(max(self.t0 + n * START_OVER / RUNS - time.monotonic(), 0.0))
            handle = await definition.astart(n)
            self.runs[handle.id] = n
            if n in self.early:
                sends.append(asyncio.create_task(self.send_later(handle.id, n)))
        await asyncio.gather(*sends)

    async def send_later(self, run_id: str, n: int) -> None:
        await asyncio.sleep(self.early_delay[n])
        await self.send(run_id, n)

    async def watch(self) -> None:
        """Note each run's first parked sleep; send the event to runs seen waiting for it."""
        while not self.stopping:
            sleeping = await _try(
                lambda: self.engine.alist_runs(state=RunState.SLEEPING, name=WORKFLOW, limit=1000)
            )
            for run in sleeping or []:
                if run.wake_at is not None:
                    self.first_parks.setdefault(run.id, run.wake_at)
            waiting = await _try(
                lambda: self.engine.alist_runs(state=RunState.WAITING, name=WORKFLOW, limit=1000)
            )
            for run in waiting or []:
                if run.waiting_for == EVENT and run.id in self.runs and run.id not in self.sent:
                    await self.send(run.id, self.runs[run.id])
            await asyncio.sleep(_TICK)

    async def leader(self) -> WorkerProcess | None:
        leader_id = await _try(lambda: self.engine.store.get_leader(now=utcnow()), 1.0)
        return self.pool.by_id(leader_id) if leader_id else None

    async def kill_on_schedule(self) -> None:
        for offset, slot in zip(self.kill_offsets, self.victims, strict=True):
            await asyncio.sleep(max(self.t0 + offset - time.monotonic(), 0.0))
            alive = [w for w in self.pool.alive() if w.find_id()] or self.pool.alive()
            if not alive:
                continue
            chosen = self.pool.slots.get(slot)
            victim = chosen if chosen in alive else alive[slot % len(alive)]
            leader = await self.leader()
            self.kills.append(self.pool.kill(victim, leader=victim is leader))
            self.pool.spawn(victim.slot, *WORKER_ARGS)

    def replace_crashed(self) -> None:
        for w in self.pool.exited_unasked():
            self.problems.append(
                f"worker pid {w.pid} ({w.worker_id}) exited on its own with code "
                f"{w.proc.returncode}. Log tail:\n{w.tail()}"
            )
            if self.pool.slots.get(w.slot) is w:
                self.pool.spawn(w.slot, *WORKER_ARGS)

    async def finished(self) -> int:
        """How many of the runs are over (any terminal state)."""

        async def count(state: RunState) -> int:
            rows = await _try(
                lambda: self.engine.alist_runs(state=state, name=WORKFLOW, limit=10_000)
            )
            return len(rows or [])

        return sum(
            [await count(s) for s in (RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED)]
        )


async def scenario(spec: Spec) -> tuple[Verdict, str]:
    began = time.monotonic()
    ledger = StepLedger(spec.ledger)
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
    pool = WorkerPool(
        app="tests.chaos.chaos_workflow_app:engine", cwd=spec.root, env=env, logs=logs
    )
    chaos = Scenario(spec, engine, pool)
    print(
        f"workflow chaos [{spec.store}] seed {spec.seed}: kills at {chaos.kill_offsets} "
        f"(slots {chaos.victims})"
    )
    tasks: list[asyncio.Task[None]] = []
    drained: float | None = None
    origin = time.time()
    try:
        await chaos.start_workers()
        chaos.t0 = time.monotonic()
        origin = time.time()
        starting = asyncio.create_task(chaos.start_runs())
        tasks = [
            starting,
            asyncio.create_task(chaos.watch()),
            asyncio.create_task(chaos.kill_on_schedule()),
        ]
        while True:
            chaos.replace_crashed()
            if starting.done() and starting.exception() is not None:
                raise AssertionError("starting runs failed") from starting.exception()
            if time.monotonic() > chaos.t0 + DEADLINE:
                chaos.problems.append(
                    f"not done after {DEADLINE:g}s: {await chaos.finished()} of {RUNS} runs "
                    f"over; logs in {logs}"
                )
                break
            if starting.done() and await chaos.finished() >= RUNS:
                drained = time.monotonic() - chaos.t0
                break
            await asyncio.sleep(_TICK)
        chaos.stopping = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        chaos.problems += await asyncio.to_thread(pool.stop_all, timeout=STOP_TIMEOUT)

        entries = await asyncio.to_thread(ledger.entries)
        runs = {run_id: await engine.aget_run(run_id) for run_id in chaos.runs}
        timelines = {run_id: await engine.atimeline(run_id) for run_id in chaos.runs}
        (spec.tmp / "ledger.json").write_text(json.dumps([e._asdict() for e in entries]))
        verdict = analyse(
            expected=chaos.runs,
            runs=runs,
            timelines=timelines,
            entries=entries,
            kills=chaos.kills,
            first_parks=chaos.first_parks,
        )
        verdict.problems[:0] = chaos.problems
    finally:
        for task in tasks:
            task.cancel()
        pool.kill_all()
        await asyncio.to_thread(ledger.close)
        await engine.aclose()
        engine.close()
    text = summary(
        store=spec.store,
        seed=spec.seed,
        v=verdict,
        kills=chaos.kills,
        started=len(pool.everyone),
        origin=origin,
        early=len(chaos.early),
        seconds=time.monotonic() - began,
        drained=drained,
    )
    (spec.tmp / "summary.txt").write_text(text + f"\nlogs: {logs}\n")
    record = {"origin": origin, "kills": [attrs.asdict(k) for k in chaos.kills]}
    (spec.tmp / "run.json").write_text(json.dumps(record, indent=1))
    return verdict, text


@pytest.fixture
def root(here: Path) -> Path:
    """The repository root: the workers import ``tests.chaos.chaos_workflow_app`` from it."""
    return here.parent.parent


async def test_workflow_chaos_on_sqlite(
    tmp_path: Path, seed: int, root: Path, report_summary: Callable[[str], None]
) -> None:
    spec = Spec(
        store="sqlite",
        url=f"sqlite:///{tmp_path}/jobs.db",
        ledger=f"sqlite:///{tmp_path}/ledger.db",
        seed=seed,
        root=root,
        tmp=tmp_path,
    )
    verdict, text = await within(
        scenario(spec), DEADLINE + STOP_TIMEOUT + 90, f"workflow chaos on {spec.store}"
    )
    report_summary(text)
    assert verdict.problems == [], text


async def test_workflow_chaos_on_postgres(
    tmp_path: Path,
    seed: int,
    root: Path,
    cluster: ChaosCluster,
    report_summary: Callable[[str], None],
) -> None:
    spec = Spec(
        store="postgresql",
        url=f"{cluster.dsn}?schema=dispatch&pool_timeout=5&max_size=10",
        ledger=cluster.dsn,
        seed=seed,
        root=root,
        tmp=tmp_path,
    )
    verdict, text = await within(
        scenario(spec), DEADLINE + STOP_TIMEOUT + 90, f"workflow chaos on {spec.store}"
    )
    report_summary(text)
    assert verdict.problems == [], text


async def test_workflow_chaos_on_redis(
    tmp_path: Path,
    seed: int,
    root: Path,
    redis_server: ChaosRedis,
    report_summary: Callable[[str], None],
) -> None:
    spec = Spec(
        store="redis",
        url=f"{redis_server.url}?prefix=chaos-wf&socket_timeout=5",
        ledger=f"sqlite:///{tmp_path}/ledger.db",
        seed=seed,
        root=root,
        tmp=tmp_path,
    )
    verdict, text = await within(
        scenario(spec), DEADLINE + STOP_TIMEOUT + 90, f"workflow chaos on {spec.store}"
    )
    report_summary(text)
    assert verdict.problems == [], text


# -- the verdict on made-up runs: it passes a clean run and fails each kind of fault ------------

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_T0 = _EPOCH.timestamp()
_RUN = "wfrun_a"


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


@attrs.define
class _Made:
    run: WorkflowRun
    timeline: list[StepRecord]
    entries: list[StepEntry]
    first_park: datetime

    def judge(self, kills: Sequence[Kill] = ()) -> Verdict:
        return analyse(
            expected={_RUN: 0},
            runs={_RUN: self.run},
            timelines={_RUN: self.timeline},
            entries=self.entries,
            kills=kills,
            first_parks={_RUN: self.first_park},
        )


def _made_up() -> _Made:
    """Run 0, completed cleanly: each step ran once (pid 100), 0.3 s apart."""
    t = _T0
    values = expected_output(0)["values"]
    timeline: list[StepRecord] = []
    entries: list[StepEntry] = []
    execs: dict[str, str] = {}
    wake = _EPOCH
    for seq, (name, kind) in enumerate(_EXPECTED_TIMELINE):
        fields: dict[str, Any] = {"seq": seq, "name": name, "kind": kind}
        if kind is StepKind.STEP:
            execs[name] = f"exec-{name}"
            entries.append(StepEntry(execs[name], _RUN, name, 100, t + 0.01, t + 0.2))
            output = {"value": values[name], "exec": execs[name]}
            fields |= {"started_at": _at(t), "finished_at": _at(t + 0.25), "output": output}
            t += 0.3
        elif kind is StepKind.SLEEP:
            wake = _at(t + SLEEP_SECONDS)
            fields |= {"started_at": _at(t), "finished_at": wake, "wake_at": wake}
            t += SLEEP_SECONDS + 0.1
        else:
            fields |= {"started_at": _at(t), "finished_at": _at(t), "output": event_payload(0)}
        timeline.append(StepRecord(state=StepState.COMPLETED, **fields))
    run = WorkflowRun(
        id=_RUN,
        name=WORKFLOW,
        version=1,
        input=0,
        state=RunState.COMPLETED,
        created_at=_EPOCH,
        updated_at=_at(t),
        finished_at=_at(t),
        output={**expected_output(0), "execs": execs},
    )
    return _Made(run=run, timeline=timeline, entries=entries, first_park=wake)


def _kill(pid: int, at: float) -> Kill:
    return Kill(at=at, pid=pid, worker_id=None, leader=False)


def test_verdict_passes_a_clean_run() -> None:
    v = _made_up().judge()
    assert v.problems == []
    assert (v.completed, v.executions, sum(v.extras.values())) == (1, 4, 0)


@pytest.mark.parametrize("finished", [False, True])
def test_verdict_explains_a_step_run_again_after_a_kill(finished: bool) -> None:
    made = _made_up()
    charge = next(e for e in made.entries if e.step == "charge")
    end = charge.started_at - 0.05 if finished else None
    made.entries.append(StepEntry("cut", _RUN, "charge", 200, charge.started_at - 0.1, end))
    v = made.judge([_kill(200, charge.started_at - 0.01)])
    # A kill after the step ended caught no step mid-way: the run proves nothing else.
    assert v.problems == (["no kill caught a step mid-way: the test proved nothing"] * finished)
    cause = "killed after the step, before its checkpoint" if finished else "killed mid-step"
    assert v.extras == Counter({cause: 1})
    assert v.runs_rerun == 1


def test_verdict_fails_a_step_run_twice_without_a_kill() -> None:
    made = _made_up()
    charge = next(e for e in made.entries if e.step == "charge")
    made.entries.append(StepEntry("cut", _RUN, "charge", 200, charge.started_at - 0.1, None))
    v = made.judge([_kill(300, charge.started_at)])
    assert any("ran twice without a kill" in p for p in v.problems)
    assert any("no kill caught a step" in p for p in v.problems)


def test_verdict_fails_a_completed_step_that_ran_again() -> None:
    made = _made_up()
    pack = next(e for e in made.entries if e.step == "pack")
    made.entries.append(StepEntry("again", _RUN, "pack", 100, pack.started_at + 1.0, None))
    v = made.judge([_kill(100, pack.started_at + 1.1)])
    assert any("a completed step ran again" in p for p in v.problems)


def test_verdict_fails_a_restarted_sleep() -> None:
    made = _made_up()
    made.first_park -= timedelta(seconds=0.7)
    v = made.judge()
    assert any("the sleep was restarted" in p for p in v.problems)


def test_verdict_fails_a_step_that_ran_before_the_sleep_ended() -> None:
    made = _made_up()
    made.entries = [
        e._replace(started_at=e.started_at - 1.0) if e.step == "pack" else e for e in made.entries
    ]
    v = made.judge()
    assert any("ran before its sleep ended" in p for p in v.problems)


def test_verdict_fails_a_failed_run_and_a_wrong_output() -> None:
    made = _made_up()
    failed = attrs.evolve(made.run, state=RunState.FAILED, error="EventTimeoutError: go")
    v = attrs.evolve(made, run=failed).judge()
    assert v.problems == ["run wfrun_a (n=0) is failed ['EventTimeoutError: go']"]
    wrong = attrs.evolve(made.run, output={**(made.run.output or {}), "event": "late"})
    v = attrs.evolve(made, run=wrong).judge()
    assert any("output" in p for p in v.problems)
