"""examples/celery_project: a project written as Celery's tutorial writes it, with only its
imports changed, run by a real `dispatch worker` on SQLite, and run under the real Celery."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from dispatch_celery import Celery

pytest.importorskip("dispatch_plugins.sqlite")

ROOT = pathlib.Path(__file__).resolve().parents[3]
PROJECT = ROOT / "examples" / "celery_project"
DISPATCH = pathlib.Path(sys.executable).with_name("dispatch")

EXPECTED_OUTPUT = [
    "add(4, 4) = 8",
    "state: SUCCESS | ready: True | successful: True",
    "mul(6, 7) = 42",
    "xsum([1, 2, 3, 4]) = 10",
    "fetch: fetched https://example.com after 2 retries",
]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISPATCH_", "CELERY_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _copy_project(dest: pathlib.Path) -> pathlib.Path:
    shutil.copytree(PROJECT, dest, ignore=shutil.ignore_patterns("__pycache__", "*.db*"))
    return dest


def _run(cwd: pathlib.Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture
def worker(tmp_path: pathlib.Path) -> Iterator[tuple[pathlib.Path, dict[str, str]]]:
    """The README's steps: DISPATCH_URL set, `dispatch worker tasks:app.engine` running."""
    project = _copy_project(tmp_path / "celery_project")
    env = _env(DISPATCH_URL=f"sqlite:///{tmp_path}/celery_project.db")
    log = tmp_path / "worker.log"
    with log.open("w") as stderr:  # a file, not a pipe: a full pipe would block the worker
        proc = subprocess.Popen(
            [str(DISPATCH), "worker", "tasks:app.engine"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()  # printed once the worker runs
        assert "Dispatch worker wkr_" in banner, banner + log.read_text()
        assert "tasks.add" in banner
        yield project, env
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def test_the_tutorial_project_runs_on_a_dispatch_worker(
    worker: tuple[pathlib.Path, dict[str, str]],
) -> None:
    project, env = worker
    output = _run(project, env, "run_tasks.py")
    assert output.splitlines() == EXPECTED_OUTPUT

    # Enqueue from a script; check the result from here, as another process would.
    job_id = _run(project, env, "-c", "from tasks import mul; print(mul.delay(7, 8).id)").strip()
    checker = Celery("checker", broker=env["DISPATCH_URL"], set_as_current=False)
    try:
        result = checker.AsyncResult(job_id)
        assert result.get(timeout=30) == 56
        assert result.state == "SUCCESS"
        assert result.name == "tasks.mul"
    finally:
        checker.close()

    # The worker declared the beat schedule in the store; its leader fires it.
    listing = subprocess.run(
        [str(DISPATCH), "cron", "ls", "--app", "tasks:app.engine"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert listing.returncode == 0, listing.stderr
    assert "add-every-30-seconds" in listing.stdout
    assert "add-every-monday-morning" in listing.stdout
    assert "30 7 * * 1" in listing.stdout


def test_without_dispatch_url_the_amqp_broker_is_refused(tmp_path: pathlib.Path) -> None:
    project = _copy_project(tmp_path / "celery_project")
    done = subprocess.run(
        [sys.executable, "run_tasks.py"],
        cwd=project,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "'pyamqp://guest@localhost//' is not a Dispatch store URL" in done.stderr


EAGER_DRIVER = "import tasks\ntasks.app.conf.task_always_eager = True\nimport run_tasks\n"


def _imports_to_celery(source: str) -> str:
    """The Celery version of a dispatch_celery module: only its import lines change."""
    lines = []
    for line in source.splitlines(keepends=True):
        if line.startswith(("from dispatch_celery", "import dispatch_celery")):
            line = line.replace("dispatch_celery", "celery")
        lines.append(line)
    return "".join(lines)


def test_the_same_source_runs_under_celery(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("celery")
    ours = _copy_project(tmp_path / "dispatch_celery_version")
    theirs = _copy_project(tmp_path / "celery_version")
    for name in ("tasks.py", "run_tasks.py"):
        source = (ours / name).read_text()
        converted = _imports_to_celery(source)
        (theirs / name).write_text(converted)
        changed = [
            (a, b)
            for a, b in zip(source.splitlines(), converted.splitlines(), strict=True)
            if a != b
        ]
        assert all(a.startswith("from dispatch_celery") for a, _ in changed), changed
    assert "from celery import Celery" in (theirs / "tasks.py").read_text()

    # Eager mode in both: Celery then needs no broker, and Dispatch no store.
    celery_output = _run(theirs, _env(), "-c", EAGER_DRIVER)
    dispatch_output = _run(ours, _env(), "-c", EAGER_DRIVER)
    assert celery_output.splitlines() == EXPECTED_OUTPUT
    assert dispatch_output == celery_output
