"""Workers whose event loop is blocked, killed, or restarted under the same id (issue 16,
finding 8), as real `dispatch worker` processes on SQLite and PostgreSQL.

The review saw a stalled or crashed worker charge an attempt to every job it held, those that
never started included (with ``max_retries=0`` they were dead-lettered without running), a
loop-blocking job run to completion three times and still end failed, and a crash recorded as
an expired lease. These tests replay each.
"""

from __future__ import annotations

import asyncio
import collections
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from dispatch_core import DLQEntry, Engine, Job, JobState
from dispatch_core.states import TERMINAL_STATES

HERE = pathlib.Path(__file__).resolve().parent
DISPATCH = pathlib.Path(sys.executable).with_name("dispatch")
# Short liveness settings so the tests take seconds: the blocked worker's row would be
# declared dead after 3 s of silence, and its leases expire after 3 s.
FAST = ("--lease", "3", "--heartbeat", "1", "--worker-timeout", "3", "--poll-interval", "0.2")

Spawn = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def env(store_url: str, tmp_path: pathlib.Path) -> dict[str, str]:
    env = dict(os.environ)
    env["DISPATCH_URL"] = store_url
    env["E2E_LEDGER"] = str(tmp_path / "ledger.txt")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def spawn(env: dict[str, str], tmp_path: pathlib.Path) -> Iterator[Spawn]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        log = tmp_path / f"worker{len(procs)}.log"
        with log.open("w") as stderr:  # a file, not a pipe: a full pipe would block the worker
            proc = subprocess.Popen(
                [str(DISPATCH), "worker", "stall_app:engine", *FAST, *args],
                cwd=HERE,
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        procs.append(proc)
        assert proc.stdout is not None
        banner = proc.stdout.readline()  # printed once the worker is running
        assert "wkr_" in banner, banner + log.read_text()
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def producer(env: dict[str, str]) -> Engine:
    """The stall app's job names, for enqueueing and reading; never run here."""
    engine = Engine(env["DISPATCH_URL"])

    @engine.job(name="stall.block", max_retries=0, priority=10)
    async def block(seconds: float) -> None: ...

    @engine.job(name="stall.quick", max_retries=0)
    async def quick(n: int) -> None: ...

    @engine.job(name="stall.long", max_retries=2)
    def long(seconds: float) -> None: ...

    return engine


def ledger(env: dict[str, str]) -> list[tuple[str, int, int, str]]:
    path = pathlib.Path(env["E2E_LEDGER"])
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(job_id, int(attempt), int(pid), event) for job_id, attempt, pid, event in rows]


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def dead_letters(env: dict[str, str]) -> list[DLQEntry]:
    async def read() -> list[DLQEntry]:
        engine = producer(env)
        try:
            return await engine.alist_dlq()
        finally:
            await engine.aclose()

    return asyncio.run(read())


def jobs(engine: Engine, ids: list[str]) -> list[Job]:
    return [engine.get_job(i) for i in ids]


def enqueue_batch(engine: Engine, block_for: float) -> tuple[str, list[str]]:
    """The blocking job (first in claim order: higher priority) and four quick ones, so that
    one claim of a worker with five slots takes all of them."""
    blocker = engine.enqueue("stall.block", block_for).id
    quick = [engine.enqueue("stall.quick", n).id for n in range(4)]
    return blocker, quick


def test_a_job_blocking_the_loop_runs_once_and_its_batch_is_given_back(
    env: dict[str, str], spawn: Spawn
) -> None:
    engine = producer(env)
    blocker, quick = enqueue_batch(engine, block_for=8)
    blocked = spawn("--concurrency", "5", "--no-lead")
    wait_until(lambda: any(r[0] == blocker for r in ledger(env)), "the blocking job to start")
    # One claim took the whole batch; the four quick jobs wait behind the blocked loop.
    assert {j.state for j in jobs(engine, quick)} == {JobState.RUNNING}
    rescuer = spawn("--concurrency", "5")  # the leader: it rescues the jobs of dead workers

    def all_finished() -> bool:
        return all(j.state in TERMINAL_STATES for j in jobs(engine, [blocker, *quick]))

    wait_until(all_finished, "every job to finish")
    finished = jobs(engine, [blocker, *quick])
    # Nothing was declared dead, nothing was dead-lettered, and each job ran once, on its
    # first attempt: the blocker on its worker, the quick ones, given back, on the other.
    assert [j.state for j in finished] == [JobState.COMPLETED] * 5, [j.last_error for j in finished]
    assert [j.attempt for j in finished] == [1] * 5
    runs = collections.Counter((r[0], r[3]) for r in ledger(env))
    assert runs[(blocker, "start")] == runs[(blocker, "end")] == 1
    assert all(runs[(q, "run")] == 1 for q in quick)
    by_pid = {r[0]: r[2] for r in ledger(env)}
    assert by_pid[blocker] == blocked.pid
    assert {by_pid[q] for q in quick} == {rescuer.pid}
    assert dead_letters(env) == []


def test_a_worker_killed_while_blocked_charges_only_the_job_that_started(
    env: dict[str, str], spawn: Spawn
) -> None:
    engine = producer(env)
    blocker, quick = enqueue_batch(engine, block_for=60)
    blocked = spawn("--concurrency", "5", "--no-lead")
    wait_until(lambda: any(r[0] == blocker for r in ledger(env)), "the blocking job to start")
    spawn("--concurrency", "5")

    def quick_done() -> bool:
        return all(j.state is JobState.COMPLETED for j in jobs(engine, quick))

    wait_until(quick_done, "the given-back jobs to run elsewhere")
    blocked.kill()  # SIGKILL, in the middle of the blocking job
    blocked.wait(10)

    def blocker_rescued() -> bool:
        return engine.get_job(blocker).state is JobState.FAILED

    wait_until(blocker_rescued, "the leader to take the blocking job back")
    assert [j.attempt for j in jobs(engine, quick)] == [1] * 4  # never charged for the crash
    (entry,) = dead_letters(env)
    assert entry.job_id == blocker
    # A crash reads as a crash, naming the worker.
    job = engine.get_job(blocker)
    assert job.last_error is not None
    assert job.last_error.startswith("worker wkr_")
    assert " died" in job.last_error
    assert entry.error == job.last_error


def test_a_worker_restarted_with_its_id_takes_its_jobs_back_at_once(
    env: dict[str, str], spawn: Spawn
) -> None:
    engine = producer(env)
    job_id = engine.enqueue("stall.long", 600).id
    # A long lease: without the takeover, the job would wait a minute to be rescued.
    first = spawn("--worker-id", "wkr_fixed", "--lease", "60", "--worker-timeout", "60")
    wait_until(lambda: any(r[0] == job_id for r in ledger(env)), "the job to start")
    held = engine.get_job(job_id)
    assert held.lease_expires_at is not None
    first.kill()
    first.wait(10)
    spawn("--worker-id", "wkr_fixed", "--lease", "60", "--worker-timeout", "60")

    def second_attempt() -> bool:
        return any(r[0] == job_id and r[1] == 2 for r in ledger(env))

    wait_until(second_attempt, "the restarted worker to run the job again", timeout=30)
    job = engine.get_job(job_id)
    assert job.state is JobState.RUNNING
    assert job.attempt == 2
    assert job.last_error == "worker wkr_fixed stopped or restarted without finishing the job"
    # Taken back while the dead worker's lease still ran: not by its expiry.
    assert job.started_at is not None
    assert job.started_at < held.lease_expires_at
