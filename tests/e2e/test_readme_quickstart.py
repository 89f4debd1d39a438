"""The README's quick start, as a new user runs it: `python myapp.py`, then `dispatch worker
myapp:engine` in the same directory, which must run the job the script enqueued."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("dispatch_plugins.sqlite")

from dispatch_core import Engine

ROOT = Path(__file__).resolve().parents[2]
PYTHON = Path(sys.executable)
DISPATCH = PYTHON.with_name("dispatch")
_JOB_LINE = re.compile(r"^enqueued (job_[0-9a-z]{26}) as (\S+)$")


def quick_start_code() -> str:
    """The first ```python block after the README's "## Quick start" heading."""
    readme = (ROOT / "README.md").read_text()
    _, heading, rest = readme.partition("\n## Quick start\n")
    assert heading, "README.md has no '## Quick start' section"
    match = re.search(r"^```python\n(.*?)^```", rest, re.DOTALL | re.MULTILINE)
    assert match, "no ```python block after '## Quick start' in README.md"
    return match.group(1)


def job_states(db: Path) -> list[tuple[str, str, str]]:
    """``(id, name, state)`` of every job in the SQLite file, read through an engine of its
    own (as another process would)."""

    async def read() -> list[tuple[str, str, str]]:
        async with Engine(f"sqlite:///{db}", auto_migrate=False) as engine:
            jobs = await engine.alist_jobs(limit=10)
        return [(j.id, j.name, j.state.value) for j in jobs]

    return asyncio.run(read())


def test_readme_quick_start_runs_its_job(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(quick_start_code())
    enqueue = subprocess.run(
        [str(PYTHON), "myapp.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert enqueue.returncode == 0, enqueue.stderr
    match = _JOB_LINE.match(enqueue.stdout.strip())
    assert match, f"unexpected output of python myapp.py: {enqueue.stdout!r}"
    job_id, name = match.groups()
    assert name == "myapp.send_welcome"  # the name the worker registers, not __main__.…
    db = tmp_path / "jobs.db"
    assert job_states(db) == [(job_id, name, "pending")]

    log = tmp_path / "worker.log"
    with log.open("w") as out:  # a file, not a pipe: a full pipe would block the worker
        worker = subprocess.Popen(
            [str(DISPATCH), "worker", "myapp:engine"],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        deadline = time.monotonic() + 30
        while job_states(db) != [(job_id, name, "completed")]:
            assert worker.poll() is None, f"the worker exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, (
                f"job not completed within 30s: {job_states(db)}\n{log.read_text()}"
            )
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker did not stop within 30s of SIGTERM:\n{log.read_text()}")
        assert code == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    # The worker's import of myapp did not enqueue a second job.
    assert job_states(db) == [(job_id, name, "completed")]
    assert "sending to a@example.com" in log.read_text()  # the handler's own log line
