"""The chaos suite's machinery: the seeded plan, the worker processes, the servers the suite
crashes, and the verdict.

The verdict (:func:`analyse`) is a pure function of what the run left behind (the job table,
the ledger of executions, the kills and the database outages) and of what a crash of the
store's server may undo (its :class:`Durability`), so it is tested on its own.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar

import attrs
import redis

from dispatch_core import Job, JobState

from ..plugins.postgres._cluster import PrivateCluster
from ..plugins.redis._server import PrivateRedis
from .chaos_app import TICK, WORK, Execution

T = TypeVar("T")

__all__ = [
    "AOF_ALWAYS",
    "ChaosCluster",
    "ChaosRedis",
    "COMMIT_LOSS",
    "Durability",
    "HELD_UP_AFTER",
    "IN_FLIGHT",
    "PG_SLACK",
    "POSTGRES_ASYNC_COMMIT",
    "RESCUE_LIMIT",
    "RESCUE_TARGET",
    "Findings",
    "Kill",
    "Outage",
    "Plan",
    "Rescue",
    "Restartable",
    "WorkerPool",
    "WorkerProcess",
    "analyse",
    "summary",
]

#: A killed worker's jobs must run again within this many seconds of the kill (the issue's
#: target is :data:`RESCUE_TARGET`; the limit leaves room for a loaded CI machine).
RESCUE_LIMIT = 15.0
RESCUE_TARGET = 10.0
#: Seconds of slop around a PostgreSQL restart: ``up_at`` is when ``pg_ctl start`` returned,
#: and the server accepts connections a little earlier.
PG_SLACK = 1.0
#: After the database is back, the leader waits a worker timeout (7 s by default) of store
#: contact before it rescues by worker timeout: kills up to this long after the restart (and
#: from :data:`RESCUE_TARGET` before it) have their rescue held up by it.
HELD_UP_AFTER = 7.0
#: Writes committed this long before an immediate stop may be lost with the server's
#: unflushed WAL (the store's workers commit with synchronous_commit=off): a claim (the same
#: attempt then runs again) or a completion (the job runs again).
COMMIT_LOSS = 2.0
#: Seconds from the ledger's ``finished_at`` stamp to the store's acknowledgement of that
#: outcome (the worker's finisher writes it at once, one round trip): a server that keeps
#: every acknowledged write may still crash with an outcome this recent unwritten.
IN_FLIGHT = 0.5
#: Seconds of slop after a Redis restart: ``up_at`` is when the restarted server first
#: answered ``PING``.
REDIS_SLACK = 0.5

_STARTED = re.compile(r"worker (wkr_[0-9a-z]+) started")


@attrs.frozen(kw_only=True)
class Durability:
    """What a crash of the store's server may undo: the verdict's allowances around an
    :class:`Outage`."""

    name: str
    #: An execution that ended this many seconds before the crash (or later) may have had its
    #: outcome lost, so its job runs again.
    outcome_loss: float
    #: A claim made this many seconds before the crash may have been lost, so its attempt runs
    #: again under the same number; ``None``: an acknowledged claim is never lost (a second
    #: execution of one attempt is then a fault, crash or not).
    claim_loss: float | None
    #: Seconds after ``up_at`` still counted as part of the outage.
    slack: float


#: PostgreSQL whose workers commit with ``synchronous_commit=off``: an immediate stop may lose
#: the last :data:`COMMIT_LOSS` seconds of commits, claims and outcomes alike.
POSTGRES_ASYNC_COMMIT = Durability(
    name="postgres, synchronous_commit=off",
    outcome_loss=COMMIT_LOSS,
    claim_loss=COMMIT_LOSS,
    slack=PG_SLACK,
)
#: Redis with ``appendonly yes`` and ``appendfsync always``: every acknowledged write is on
#: disk before its reply, so a ``kill -9`` loses nothing acknowledged. Only an outcome still
#: in flight (:data:`IN_FLIGHT`) or not yet sent may be lost; no claim ever is.
AOF_ALWAYS = Durability(
    name="redis, appendfsync always", outcome_loss=IN_FLIGHT, claim_loss=None, slack=REDIS_SLACK
)


class Restartable(Protocol):
    """A store's server that the suite crashes and starts again under load."""

    durability: ClassVar[Durability]
    #: What summaries call it.
    label: ClassVar[str]

    def crash(self) -> None:
        """Stop the server as a crash would (no clean shutdown)."""

    def start(self) -> None:
        """Start it again on the same files; return once it accepts connections."""


class ChaosCluster(PrivateCluster):
    """A private cluster that can also be stopped and started as two steps."""

    durability: ClassVar[Durability] = POSTGRES_ASYNC_COMMIT
    label: ClassVar[str] = "PostgreSQL"

    def _options(self) -> str:
        # Four workers' pools and ledger connections, plus the test's own, need headroom.
        return super()._options() + " -c max_connections=200"

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server: ``immediate`` is a crash (no checkpoint, unflushed WAL lost)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        self.started = False

    def crash(self) -> None:
        self.stop("immediate")


class ChaosRedis(PrivateRedis):
    """A private ``redis-server`` (append-only file, ``appendfsync always``), crashed with
    ``kill -9`` and started again on the same files."""

    durability: ClassVar[Durability] = AOF_ALWAYS
    label: ClassVar[str] = "Redis"

    def crash(self) -> None:
        self.kill()

    def settings(self) -> dict[str, str]:
        """The server's persistence settings, which :data:`AOF_ALWAYS` assumes."""
        client = redis.Redis(port=self.port, socket_connect_timeout=5, decode_responses=True)
        try:
            names = ("appendonly", "appendfsync", "maxmemory-policy")
            return {name: str(client.config_get(name)[name]) for name in names}
        finally:
            client.close()


@attrs.frozen(kw_only=True)
class Plan:
    """When to kill, whom, and when to restart the database: drawn from the seed."""

    seed: int
    #: Seconds after the start at which a worker is killed.
    kill_offsets: tuple[float, ...]
    #: Which kill (index into :attr:`kill_offsets`) targets the current leader.
    leader_kill: int
    #: Per kill, the worker slot to kill when it is not the leader kill.
    victim_slots: tuple[int, ...]
    #: Seconds after the start at which the store's server is crashed, and for how long.
    restart_at: float
    down_for: float

    @classmethod
    def draw(cls, seed: int, *, workers: int) -> Plan:
        """A plan: a kill every 2.5-4 s from about 3 s to 20 s (at least five), the second or
        the third aimed at the leader, and one crash and restart of the store's server (when it
        has one) between the fourth and the fifth, once leadership has settled again."""
        rng = random.Random(seed)
        offsets = [rng.uniform(2.5, 3.5)]
        while offsets[-1] < 17.0:
            offsets.append(offsets[-1] + rng.uniform(2.5, 4.0))
        return cls(
            seed=seed,
            kill_offsets=tuple(round(o, 2) for o in offsets),
            leader_kill=rng.choice((1, 2)),
            victim_slots=tuple(rng.randrange(workers) for _ in offsets),
            restart_at=round(rng.uniform(offsets[3] + 0.3, offsets[4] - 0.3), 2),
            down_for=round(rng.uniform(2.0, 3.5), 2),
        )


@attrs.frozen(kw_only=True)
class Kill:
    """A ``kill -9`` sent by the suite."""

    #: ``time.time()`` just before the signal.
    at: float
    pid: int
    worker_id: str | None
    leader: bool


@attrs.frozen(kw_only=True)
class Outage:
    """A crash of the store's server: down at ``down_at``, accepting again at ``up_at``."""

    down_at: float
    up_at: float


@attrs.define
class WorkerProcess:
    """One ``dispatch worker`` process and its log file."""

    slot: int
    proc: subprocess.Popen[bytes]
    log: Path
    worker_id: str | None = None
    killed: bool = False
    #: Set once the suite has noticed that the process exited without being asked to.
    reported: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def find_id(self) -> str | None:
        """The ``wkr_…`` id, once the worker has logged that it started."""
        if self.worker_id is None and self.log.exists():
            found = _STARTED.search(self.log.read_text(errors="replace"))
            if found:
                self.worker_id = found.group(1)
        return self.worker_id

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class WorkerPool:
    """Worker processes, one per slot, each logging to its own file."""

    def __init__(self, *, app: str, cwd: Path, env: Mapping[str, str], logs: Path) -> None:
        self.app = app
        self.cwd = cwd
        self.env = dict(env)
        self.logs = logs
        self.everyone: list[WorkerProcess] = []
        self.slots: dict[int, WorkerProcess] = {}

    def spawn(self, slot: int, *args: str) -> WorkerProcess:
        """Start a worker in ``slot`` (replacing whatever ran there)."""
        log = self.logs / f"worker-{len(self.everyone):02d}-slot{slot}.log"
        command = [sys.executable, "-m", "dispatch_core.cli", "worker", self.app, *args]
        with log.open("wb") as out:  # a file, not a pipe: a full pipe would block the worker
            proc = subprocess.Popen(
                command, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        worker = WorkerProcess(slot=slot, proc=proc, log=log)
        self.everyone.append(worker)
        self.slots[slot] = worker
        return worker

    def alive(self) -> list[WorkerProcess]:
        """The workers in their slots that still run, by slot."""
        return [w for _, w in sorted(self.slots.items()) if w.proc.poll() is None]

    def by_id(self, worker_id: str) -> WorkerProcess | None:
        for w in self.everyone:
            if w.find_id() == worker_id:
                return w
        return None

    def by_pid(self, pid: int) -> WorkerProcess | None:
        for w in self.everyone:
            if w.pid == pid:
                return w
        return None

    def kill(self, worker: WorkerProcess, *, leader: bool) -> Kill:
        """``kill -9`` the worker; the caller starts a replacement."""
        worker.find_id()
        worker.killed = True
        at = time.time()
        os.kill(worker.pid, signal.SIGKILL)
        worker.proc.wait(10)
        return Kill(at=at, pid=worker.pid, worker_id=worker.worker_id, leader=leader)

    def exited_unasked(self) -> list[WorkerProcess]:
        """Workers that exited though nobody killed or stopped them (each reported once)."""
        found = [
            w
            for w in self.everyone
            if not w.killed and not w.reported and w.proc.poll() is not None
        ]
        for w in found:
            w.reported = True
        return found

    def stop_all(self, *, timeout: float) -> list[str]:
        """SIGTERM every live worker and wait for it; return what went wrong."""
        problems: list[str] = []
        live = [w for w in self.everyone if w.proc.poll() is None]
        for w in live:
            w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for w in live:
            try:
                code = w.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(10)
                problems.append(
                    f"worker pid {w.pid} ({w.worker_id}) ignored SIGTERM for {timeout:g}s; "
                    f"killed. Log tail:\n{w.tail()}"
                )
                continue
            if code != 0:
                problems.append(
                    f"worker pid {w.pid} ({w.worker_id}) exited {code} after SIGTERM. "
                    f"Log tail:\n{w.tail()}"
                )
        return problems

    def kill_all(self) -> None:
        """Last resort (test teardown): no worker outlives the test."""
        for w in self.everyone:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait(10)


@attrs.frozen(kw_only=True)
class Rescue:
    """What became of the jobs a killed worker was running."""

    kill: Kill
    #: Seconds from the kill to the next start of each of those jobs (sorted).
    times: list[float]
    #: The database restart that got in the way, if any: its rescue may wait for it (the
    #: leader rescues only after a full worker timeout of store contact).
    outage: Outage | None = None
    #: When the rescue clock started: the kill, or the later kill of a leader that died
    #: before it could rescue these jobs (a rescue needs a live leader; its successor
    #: starts over: lease expiry, then a worker timeout).
    since: float | None = None

    @property
    def limit(self) -> float:
        """The latest acceptable time (from the kill): :data:`RESCUE_LIMIT` from the start of
        the rescue clock; when the database was down in the way, :data:`HELD_UP_AFTER` +
        :data:`RESCUE_TARGET` from its return (the leader first waits a worker timeout of
        contact, then rescues as usual)."""
        start = self.kill.at if self.since is None else self.since
        if self.outage is None:
            return start - self.kill.at + RESCUE_LIMIT
        return max(self.outage.up_at - self.kill.at, 0.0) + HELD_UP_AFTER + RESCUE_TARGET


@attrs.define
class Findings:
    """What the run proved, and what went wrong."""

    problems: list[str] = attrs.Factory(list)
    jobs: int = 0
    completed: int = 0
    executions: int = 0
    #: Executions beyond the one that completed each job, by cause.
    extras: Counter[str] = attrs.Factory(Counter)
    ticks_fired: int = 0
    ticks_span: int = 0
    longest_tick_gap: int = 0
    rescues: list[Rescue] = attrs.Factory(list)

    def rescue_times(self, *, across: bool) -> list[float]:
        """Rescue times of the kills made away from (or around) a database restart."""
        return [t for r in self.rescues if (r.outage is not None) is across for t in r.times]


def _why_extra(
    e: Execution, kills: Sequence[Kill], outages: Sequence[Outage], durability: Durability
) -> str | None:
    """Why an execution that did not complete its job may legitimately have run: its worker
    was killed after it started, or it was running (or had just finished, and its outcome
    was not yet durable) when the store's server went down."""
    for k in kills:
        if k.pid == e.pid and e.started_at <= k.at:
            return "killed"
    for o in outages:
        # An execution that never ended was killed (above): the handlers outlast an outage.
        ended_late = (
            e.finished_at is not None and e.finished_at >= o.down_at - durability.outcome_loss
        )
        if e.started_at <= o.up_at + durability.slack and ended_late:
            return "server restart"
    return None


def _lost_claim(e: Execution, outages: Sequence[Outage], durability: Durability) -> bool:
    """Whether ``e`` may have started on a claim the server lost in its crash (its attempt
    then runs again under the same number): never when acknowledged claims are durable."""
    loss = durability.claim_loss
    if loss is None:
        return False
    return any(o.down_at - loss <= e.started_at <= o.up_at + durability.slack for o in outages)


def _describe(e: Execution) -> str:
    end = f"{e.finished_at:.3f}" if e.finished_at is not None else "never"
    return (
        f"{e.kind} job {e.job_id} attempt {e.attempt} on {e.worker_id} (pid {e.pid}), "
        f"started {e.started_at:.3f}, finished {end}"
    )


def analyse(
    *,
    expected: set[str],
    jobs: Sequence[Job],
    executions: Sequence[Execution],
    kills: Sequence[Kill],
    outages: Sequence[Outage],
    dead_letters: int,
    durability: Durability = POSTGRES_ASYNC_COMMIT,
) -> Findings:
    """Check the run: every job completed exactly once, every extra execution explained by a
    kill or the database restart (as far as the server's ``durability`` allows), each cron
    tick fired once; measure the rescues.

    Args:
        expected: Ids of the ``chaos.work`` jobs the suite enqueued.
        jobs: Every job in the job table at the end.
        executions: Every ledger row.
        kills: The suite's kills.
        outages: The database restarts.
        dead_letters: Entries in the dead-letter queue.
        durability: What a crash of the store's server may undo (it matters only with
            ``outages``).
    """
    f = Findings(jobs=len(expected), executions=len(executions))
    table = {j.id: j for j in jobs}
    work = {j.id for j in jobs if j.name == WORK}
    ticks = [j for j in jobs if j.name == TICK]

    # The job table: everything enqueued is there, completed; nothing failed.
    missing = expected - work
    if missing:
        f.problems.append(f"{len(missing)} jobs lost (not in the job table): {sorted(missing)[:5]}")
    strays = work - expected
    if strays:
        f.problems.append(f"{len(strays)} chaos.work jobs nobody enqueued: {sorted(strays)[:5]}")
    states = Counter(j.state for j in jobs)
    f.completed = sum(1 for i in expected & work if table[i].state is JobState.COMPLETED)
    unfinished = [j for j in jobs if j.state is not JobState.COMPLETED]
    if unfinished:
        by_state = dict(Counter(j.state.value for j in unfinished))
        shown = ", ".join(f"{j.id} ({j.name}) {j.state.value}" for j in unfinished[:5])
        f.problems.append(f"{len(unfinished)} jobs not completed {by_state}: {shown}")
    if dead_letters:
        f.problems.append(f"{dead_letters} dead-letter entries (failed: {states[JobState.FAILED]})")

    # The ledger: one final execution per job, every other one explained.
    by_job: dict[str, list[Execution]] = defaultdict(list)
    for e in executions:
        by_job[e.job_id].append(e)
    unknown = set(by_job) - set(table)
    if unknown:
        f.problems.append(f"executions of {len(unknown)} jobs absent from the job table")
    never_ran = [i for i in table if i not in by_job and table[i].state is JobState.COMPLETED]
    if never_ran:
        f.problems.append(f"{len(never_ran)} jobs completed without an execution: {never_ran[:5]}")
    unexplained: list[Execution] = []
    twice: list[Execution] = []
    for job_id, runs in by_job.items():
        job = table.get(job_id)
        if job is None:
            continue
        # One execution per attempt number, but for claims the database lost in a crash:
        # the attempt then ran again, and the later run is the one the job table knows.
        attempts: dict[int, list[Execution]] = defaultdict(list)
        for e in sorted(runs, key=lambda e: e.started_at):
            attempts[e.attempt].append(e)
        for same in attempts.values():
            for e in same[:-1]:
                if _lost_claim(e, outages, durability):
                    f.extras["crash lost the claim"] += 1
                else:
                    twice.append(e)
                    f.extras["unexplained"] += 1
        final = attempts.get(job.attempt, [])[-1:]
        if job.state is JobState.COMPLETED and (not final or final[0].finished_at is None):
            f.problems.append(
                f"job {job_id} completed by attempt {job.attempt}, but the ledger has "
                f"{[_describe(e) for e in final]} for it"
            )
        for attempt, same in attempts.items():
            if job.state is JobState.COMPLETED and attempt == job.attempt:
                continue
            cause = _why_extra(same[-1], kills, outages, durability)
            if cause is None:
                unexplained.append(same[-1])
                f.extras["unexplained"] += 1
            else:
                f.extras[cause] += 1
    if twice:
        shown = "\n  ".join(_describe(e) for e in twice[:10])
        f.problems.append(
            f"{len(twice)} attempts ran twice (same job, same attempt number), not across a "
            f"crash that may lose claims ({durability.name}):\n  {shown}"
        )
    if unexplained:
        shown = "\n  ".join(_describe(e) for e in unexplained[:10])
        f.problems.append(
            f"{len(unexplained)} extra executions neither killed nor cut short by the database "
            f"restart:\n  {shown}"
        )

    # Cron: one job per tick, each tick's executions all of that job.
    keys = Counter(j.unique_key for j in ticks)
    if any(n > 1 for n in keys.values()) or None in keys:
        f.problems.append(
            f"cron jobs without a unique tick: {[k for k, n in keys.items() if n > 1]}"
        )
    tick_jobs: dict[str | None, set[str]] = defaultdict(set)
    for e in executions:
        if e.kind == "tick":
            tick_jobs[e.tick].add(e.job_id)
    doubled = {k: v for k, v in tick_jobs.items() if len(v) > 1}
    if doubled:
        f.problems.append(f"cron ticks run as several jobs: {doubled}")
    moments = sorted(tick_time(k) for k in keys if k is not None)
    f.ticks_fired = len(moments)
    if moments:
        f.ticks_span = int((moments[-1] - moments[0]).total_seconds()) + 1
        gaps = [int((b - a).total_seconds()) for a, b in itertools.pairwise(moments)]
        f.longest_tick_gap = max(gaps, default=1)
    else:
        f.problems.append("cron never fired")

    # Rescue: from each kill to the next start of the jobs its worker was running.
    for k in kills:
        victims = [e for e in executions if e.pid == k.pid and e.started_at <= k.at]
        times = []
        for v in victims:
            later = [e.started_at for e in by_job[v.job_id] if e.started_at > k.at]
            if later:
                times.append(min(later) - k.at)
        # A leader killed while these jobs still waited for their rescue restarts its clock.
        since = k.at
        for later in sorted(x.at for x in kills if x.leader and x.at > k.at):
            if later <= since + RESCUE_TARGET and (not times or later < k.at + times[-1]):
                since = later
        in_the_way = [
            o for o in outages if o.down_at - RESCUE_TARGET <= since <= o.up_at + HELD_UP_AFTER
        ]
        rescue = Rescue(
            kill=k,
            times=sorted(times),
            outage=in_the_way[0] if in_the_way else None,
            since=since,
        )
        f.rescues.append(rescue)
        if times and times[-1] > rescue.limit:
            f.problems.append(
                f"the jobs of worker {k.worker_id} (pid {k.pid}), killed "
                f"{'as leader ' if k.leader else ''}at {k.at:.3f}, ran again only after "
                f"{times[-1]:.1f}s: over the limit of {rescue.limit:.1f}s"
                + ("" if rescue.outage is None else " (held up by the database restart)")
            )
    if kills and not any(r.times for r in f.rescues):
        f.problems.append("no kill caught a job in flight: the rescue was not measured")
    if kills and not any(k.leader for k in kills):
        f.problems.append("the leader was never killed (no leader found when its turn came)")
    return f


def tick_time(key: str) -> datetime:
    """The tick in a cron job's unique key ``cron:<name>:<ISO tick>``."""
    stamp = key.split(":", 2)[2]
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")


def summary(
    *,
    store: str,
    plan: Plan,
    findings: Findings,
    workers: int,
    started: int,
    refused: int,
    outages: Sequence[Outage],
    origin: float,
    drained: float | None,
    seconds: float,
) -> str:
    """The figures of one run, a few lines (``started``: worker processes started, the
    ``refused`` ones included); times of kills and restarts are counted from
    ``origin`` (the ``time.time()`` when the first workers all ran), as is ``drained`` (when
    every job was completed; ``None`` if never)."""
    f = findings
    kills = [r.kill for r in f.rescues]
    extras = sum(f.extras.values())
    causes = ", ".join(f"{cause} {n}" for cause, n in sorted(f.extras.items())) or "none"
    clear = f.rescue_times(across=False)
    rescue = "not measured"
    if clear:
        rescue = (
            f"{len(clear)} jobs, p50 {statistics.median(clear):.1f}s, max {max(clear):.1f}s "
            f"(target {RESCUE_TARGET:g}s, limit {RESCUE_LIMIT:g}s)"
        )
    across = [
        r.times[-1] - (r.outage.up_at - r.kill.at)
        for r in f.rescues
        if r.outage is not None and r.times
    ]
    held_up = []
    if across:
        held_up = [
            f"  held up      {len(f.rescue_times(across=True))} jobs of kills around the database "
            f"restart: max {max(across):.1f}s after it was back "
            f"(limit {HELD_UP_AFTER + RESCUE_TARGET:g}s)"
        ]
    per_kill = [
        f"+{r.kill.at - origin:.1f}s{' leader' if r.kill.leader else ''}"
        f"{' (database restart)' if r.outage else ''}: "
        + (f"{len(r.times)} jobs, {r.times[0]:.1f}-{r.times[-1]:.1f}s" if r.times else "no job")
        for r in f.rescues
    ]
    downs = ", ".join(f"+{o.down_at - origin:.1f}s for {o.up_at - o.down_at:.1f}s" for o in outages)
    lines = [
        f"chaos [{store}] seed {plan.seed}: {'PASS' if not f.problems else 'FAIL'} "
        f"in {seconds:.1f}s",
        f"  jobs         {f.jobs} enqueued, {f.completed} completed, {f.jobs - f.completed} not"
        + (f"; drained in {drained:.1f}s" if drained is not None else ""),
        f"  workers      {workers} at a time, {started} started, {len(kills)} killed "
        f"({sum(k.leader for k in kills)} leader)"
        + (f", {refused} refused to start while the database was down" if refused else ""),
        f"  restarts     {len(outages)}" + (f" ({downs})" if outages else ""),
        f"  executions   {f.executions} = {f.executions - extras} that completed "
        f"({f.ticks_fired} cron) + {extras} extra ({causes})",
        f"  cron ticks   {f.ticks_fired} fired over {f.ticks_span}s, "
        f"{max(f.ticks_span - f.ticks_fired, 0)} collapsed by the misfire policy "
        f"(longest gap {f.longest_tick_gap}s)",
        f"  rescue       {rescue}",
        *held_up,
        *(f"    kill {line}" for line in per_kill),
    ]
    if f.problems:
        lines.append(f"  problems     {len(f.problems)}:")
        lines += [f"    - {p}" for p in f.problems]
    return "\n".join(lines)


async def within(coro: Awaitable[T], seconds: float, what: str) -> T:
    """Await ``coro``, but fail after ``seconds`` with every task's stack instead of hanging
    (a stuck await would otherwise hold CI until its own time limit)."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if task in done:
        return task.result()
    stacks = io.StringIO()
    for other in asyncio.all_tasks():
        if other is not asyncio.current_task():
            other.print_stack(limit=12, file=stacks)
    task.cancel()
    await asyncio.wait({task}, timeout=10)
    raise AssertionError(
        f"{what} still running after {seconds:g}s; its tasks:\n{stacks.getvalue()}"
    )
