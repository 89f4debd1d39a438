"""The example app served by a real WSGI server (waitress), driven over HTTP, with a real
``flask dispatch worker`` process on a real store (a SQLite file; PostgreSQL when available).

Both processes are started from the repository root exactly as docs/adapters/flask.md says.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
FLASK = pathlib.Path(sys.executable).with_name("flask")
PG_DSN = os.environ.get(
    "DISPATCH_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)

pytestmark = pytest.mark.slow

ADMIN_SECRET = secrets.token_urlsafe(24)


class Processes:
    """Starts the web server and workers; stops them all at the end of the test."""

    def __init__(self, tmp_path: pathlib.Path, store_url: str) -> None:
        self.tmp_path = tmp_path
        self.env = {
            **os.environ,
            "DISPATCH_URL": store_url,
            "PYTHONUNBUFFERED": "1",
            "DISPATCH_ADMIN_TOKENS": json.dumps(
                [{"name": "ops", "token": ADMIN_SECRET, "scopes": ["admin"]}]
            ),
        }
        self.procs: list[subprocess.Popen[str]] = []

    def _spawn(self, args: list[str], log_name: str) -> tuple[subprocess.Popen[str], pathlib.Path]:
        log = self.tmp_path / log_name
        with log.open("w") as stderr:  # a file, not a pipe: a full pipe would block the child
            proc = subprocess.Popen(
                args, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=stderr, text=True
            )
        self.procs.append(proc)
        return proc, log

    def serve(self) -> str:
        """``waitress-serve --call examples.flask_app:create_app`` on a free port; its URL."""
        args = [sys.executable, "-m", "waitress", "--host=127.0.0.1", "--port=0"]
        proc, log = self._spawn([*args, "--call", "examples.flask_app:create_app"], "web.log")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = re.search(r"Serving on (http://127\.0\.0\.1:\d+)", log.read_text())
            if found:
                return found.group(1)
            assert proc.poll() is None, f"waitress exited: {log.read_text()}"
            time.sleep(0.05)
        pytest.fail(f"waitress did not start: {log.read_text()}")

    def worker(self) -> subprocess.Popen[str]:
        """``flask --app examples.flask_app dispatch worker``, once its banner is printed."""
        args = [str(FLASK), "--app", "examples.flask_app", "dispatch", "worker"]
        proc, log = self._spawn(args, f"worker{len(self.procs)}.log")
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert "Dispatch worker wkr_" in banner, banner + log.read_text()
        assert "concurrency 4 |" in banner  # DISPATCH_WORKER_CONCURRENCY of the example
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def processes(tmp_path: pathlib.Path) -> Iterator[Callable[[str], Processes]]:
    made: list[Processes] = []

    def make(store_url: str) -> Processes:
        made.append(Processes(tmp_path, store_url))
        return made[-1]

    yield make
    for p in made:
        p.stop_all()


def wait_for_state(client: httpx.Client, job_id: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        body: dict[str, Any] = client.get(f"/jobs/{job_id}").raise_for_status().json()
        if body["state"] == state:
            return body
        assert time.monotonic() < deadline, f"job {job_id} stuck in {body}"
        time.sleep(0.05)


def run_scenario(procs: Processes) -> None:
    base_url = procs.serve()
    with httpx.Client(base_url=base_url, timeout=10) as client:
        # Enqueued before any worker runs: the job waits, pending.
        first = client.post("/signups", json={"user_id": 1, "email": "ada@example.com"})
        assert first.status_code == 202, first.text
        job_id = first.json()["job_id"]
        assert first.headers["Location"] == f"/jobs/{job_id}"
        assert client.get(f"/jobs/{job_id}").json()["state"] == "pending"

        # A payload that does not fit Welcome is refused at enqueue, with the field path.
        bad = client.post("/signups", json={"user_id": "one"})
        assert bad.status_code == 400
        assert "required field missing @ $.email" in bad.json()["error"]
        assert client.get("/jobs/job_nosuch").status_code == 404

        worker = procs.worker()
        done = wait_for_state(client, job_id, "completed")
        # The job ran in the worker's app context: it read the app's config.
        assert done["result"] == {"from": "welcome@example.com", "to": "ada@example.com"}
        audit = wait_for_state(client, first.json()["audit_job_id"], "completed")
        assert audit["result"] == {"app": "examples.flask_app", "user_id": 1}

        # Enqueued while the worker runs: picked up without a restart.
        second = client.post("/signups", json={"user_id": 2, "email": "bob@example.com"})
        later = wait_for_state(client, second.json()["job_id"], "completed")
        assert later["result"]["to"] == "bob@example.com"

        check_admin_mount(client, job_id)

    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0
    assert "stopped: 4 completed, 0 retried, 0 failed" in out


def check_admin_mount(client: httpx.Client, job_id: str) -> None:
    """The admin API and dashboard that create_app() mounts at /dispatch, through waitress."""
    auth = {"Authorization": f"Bearer {ADMIN_SECRET}"}
    refused = client.get("/dispatch/v1/jobs")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"
    assert client.get("/dispatch/v1/health/ready").json()["store"] == "ok"
    listed = client.get("/dispatch/v1/jobs", params={"state": "completed"}, headers=auth)
    assert listed.status_code == 200, listed.text
    assert job_id in [job["id"] for job in listed.json()["items"]]
    shown = client.get(f"/dispatch/v1/jobs/{job_id}", headers=auth).json()
    assert shown["result"] == {"from": "welcome@example.com", "to": "ada@example.com"}
    page = client.get("/dispatch/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    # the app's own routes are untouched by the mount
    assert client.get(f"/jobs/{job_id}").json()["state"] == "completed"


def test_example_app_under_waitress_with_a_worker_on_sqlite(
    processes: Callable[[str], Processes], tmp_path: pathlib.Path
) -> None:
    pytest.importorskip("dispatch_plugins.sqlite")
    run_scenario(processes(f"sqlite:///{tmp_path / 'jobs.db'}"))


def test_example_app_under_waitress_with_a_worker_on_postgres(
    processes: Callable[[str], Processes], require_service: Callable[[str], None]
) -> None:
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except psycopg.Error as exc:
        require_service(f"PostgreSQL at {PG_DSN} ({' '.join(str(exc).split())})")
    schema = f"dispatch_flask_{secrets.token_hex(4)}"
    separator = "&" if "?" in PG_DSN else "?"
    try:
        run_scenario(processes(f"{PG_DSN}{separator}schema={schema}"))
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
