"""Real `dispatch worker` processes sharing one SQLite file."""

from __future__ import annotations

import collections
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("dispatch_plugins.sqlite")

from dispatch_core import Engine, JobState

HERE = pathlib.Path(__file__).resolve().parent
DISPATCH = pathlib.Path(sys.executable).with_name("dispatch")


@pytest.fixture
def env(tmp_path: pathlib.Path) -> dict[str, str]:
    env = dict(os.environ)
    env["DISPATCH_URL"] = f"sqlite:///{tmp_path}/jobs.db"
    env["E2E_LEDGER"] = str(tmp_path / "ledger.txt")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def spawn(env: dict[str, str], tmp_path: pathlib.Path) -> Iterator:  # type: ignore[type-arg]
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        log = tmp_path / f"worker{len(procs)}.log"
        with log.open("w") as stderr:  # a file, not a pipe: a full pipe would block the worker
            proc = subprocess.Popen(
                [str(DISPATCH), "worker", "e2e_app:engine", *args],
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


def app_engine(env: dict[str, str]) -> Engine:
    """A producer for the workers' jobs: same names and payload types, never run here."""
    engine = Engine(env["DISPATCH_URL"])

    @engine.job(name="e2e.record")
    def record(n: int) -> None: ...

    @engine.job(name="e2e.slow", max_retries=3)
    def slow(seconds: float) -> None: ...

    return engine


def wait_until(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def ledger(env: dict[str, str]) -> list[tuple[str, int, int]]:
    path = pathlib.Path(env["E2E_LEDGER"])
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        job_id, attempt, pid = line.split()
        rows.append((job_id, int(attempt), int(pid)))
    return rows


def completed(engine: Engine) -> int:
    import asyncio

    async def count() -> int:
        try:
            return (await engine.acount_jobs()).get(JobState.COMPLETED, 0)
        finally:
            await engine.aclose()

    return asyncio.run(count())


@pytest.mark.slow
def test_several_worker_processes_never_run_an_attempt_twice(env, spawn) -> None:  # type: ignore[no-untyped-def]
    workers = [spawn("-c", "4") for _ in range(3)]
    engine = app_engine(env)
    jobs = engine.enqueue_many("e2e.record", range(600))
    wait_until(lambda: completed(engine) == 600)
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        assert w.wait(30) == 0
    rows = ledger(env)
    per_job = collections.Counter(job_id for job_id, _, _ in rows)
    assert set(per_job) == {j.id for j in jobs}
    assert all(count == 1 for count in per_job.values()), per_job.most_common(3)
    assert len({(job_id, attempt) for job_id, attempt, _ in rows}) == len(rows)
    pids = {pid for _, _, pid in rows}
    assert len(pids) >= 2  # the work really was shared between processes
    assert pids <= {w.pid for w in workers}


@pytest.mark.slow
def test_a_killed_worker_s_job_is_rescued_by_another(env, spawn) -> None:  # type: ignore[no-untyped-def]
    doomed = spawn("-c", "1", "--lease", "1")
    engine = app_engine(env)
    job = engine.enqueue("e2e.slow", 2.0)
    wait_until(lambda: len(ledger(env)) == 1, timeout=30)  # attempt 1 started in `doomed`
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    survivor = spawn("-c", "1", "--lease", "1")
    wait_until(lambda: completed(engine) == 1, timeout=60)
    survivor.send_signal(signal.SIGTERM)
    assert survivor.wait(30) == 0
    rows = ledger(env)
    assert [(a, pid) for _, a, pid in rows] == [(1, doomed.pid), (2, survivor.pid)]
    final = engine.get_job(job.id)
    assert (final.state, final.attempt, final.result) == (JobState.COMPLETED, 2, "done")
    engine.close()


@pytest.mark.slow
def test_sigterm_releases_a_running_job_without_consuming_its_attempt(env, spawn) -> None:  # type: ignore[no-untyped-def]
    worker = spawn("-c", "1", "--grace", "0.2")
    engine = app_engine(env)
    job = engine.enqueue("e2e.slow", 20.0, max_retries=0)
    wait_until(lambda: len(ledger(env)) == 1, timeout=30)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    back = engine.get_job(job.id)
    assert (back.state, back.attempt) == (JobState.PENDING, 0)
    engine.close()
