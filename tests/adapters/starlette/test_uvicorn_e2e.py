"""The example apps under a real uvicorn server, driven over HTTP.

Each test starts ``python -m uvicorn examples.<app>:app`` in a subprocess from the repository
root, as docs/adapters/starlette.md tells a user to, on a real store.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from dispatch_core import Engine, Job, JobState

REPO = pathlib.Path(__file__).resolve().parents[3]
DISPATCH = pathlib.Path(sys.executable).with_name("dispatch")
PG_DSN = os.environ.get(
    "DISPATCH_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """One uvicorn process serving an example app, its log in a file."""

    def __init__(self, module: str, env: dict[str, str], log: pathlib.Path) -> None:
        self.port = free_port()
        self.log_path = log
        with log.open("w") as out:  # a file, not a pipe: a full pipe would block the server
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "uvicorn", f"examples.{module}:app"),
                    *("--host", "127.0.0.1", "--port", str(self.port)),
                ],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5.0)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited early:\n{self.log()}"
            try:
                if self.http.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"server not ready within {timeout}s:\n{self.log()}")

    def job(self, job_id: str) -> dict[str, object]:
        reply = self.http.get(f"/jobs/{job_id}")
        assert reply.status_code == 200, reply.text
        job: dict[str, object] = reply.json()
        return job

    def wait_state(self, job_id: str, state: str, timeout: float = 15.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while (job := self.job(job_id))["state"] != state:
            assert time.monotonic() < deadline, f"job {job} not {state}:\n{self.log()}"
            time.sleep(0.02)
        return job

    def stop(self, sig: signal.Signals, timeout: float = 30.0) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def close(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def start(tmp_path: pathlib.Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(module: str, url: str, **env: str) -> Server:
        server = Server(
            module,
            {**os.environ, "DISPATCH_URL": url, "PYTHONUNBUFFERED": "1", **env},
            tmp_path / f"server{len(servers)}.log",
        )
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def stored_jobs(url: str) -> dict[str, Job]:
    """Every job in the store, read by a fresh engine once the server is gone."""

    async def read() -> dict[str, Job]:
        async with Engine(url) as engine:
            return {job.id: job for job in await engine.alist_jobs()}

    return asyncio.run(read())


@pytest.mark.parametrize(
    ("module", "sig"),
    [("starlette_app", signal.SIGINT), ("fastapi_app", signal.SIGTERM)],
)
def test_example_app_runs_jobs_in_process_and_stops_cleanly(
    start: Callable[..., Server], tmp_path: pathlib.Path, module: str, sig: signal.Signals
) -> None:
    pytest.importorskip("dispatch_plugins.sqlite")
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    server = start(module, url)
    server.wait_ready()

    reply = server.http.post("/welcome", json={"user_id": 1, "email": "a@example.com"})
    assert reply.status_code == 202, reply.text
    welcome = reply.json()
    assert welcome["name"] == "example.send_welcome"
    done = server.wait_state(welcome["id"], "completed")
    assert done["result"] == {"sent_to": "a@example.com"}
    assert done["attempt"] == 1

    bad = server.http.post("/welcome", json={"user_id": "1"})
    assert bad.status_code == 422, bad.text
    assert "email" in bad.text

    # A job still running when the server is told to stop finishes within the grace period.
    report = server.http.post("/reports", json={"account_id": 9, "pages": 5}).json()
    server.wait_state(report["id"], "running")
    # After a complete graceful shutdown uvicorn re-raises the signal it caught, so that a
    # supervisor sees it: SIGINT ends in a clean exit 0, SIGTERM in death by SIGTERM.
    expected = 0 if sig is signal.SIGINT else -signal.SIGTERM
    assert server.stop(sig) == expected, server.log()

    log = server.log()
    assert "stopping in-process Dispatch worker" in log
    assert "stopped: WorkerStats(completed=2," in log
    assert "Application shutdown complete" in log
    assert "Traceback" not in log

    jobs = stored_jobs(url)
    assert sorted(jobs) == sorted([welcome["id"], report["id"]])  # the 422 wrote nothing
    finished = jobs[report["id"]]
    assert (finished.state, finished.attempt) == (JobState.COMPLETED, 1)
    assert finished.result == {"account_id": 9, "pages": 5}


def test_fastapi_app_mounts_the_admin_api_with_tenant_tokens(
    start: Callable[..., Server], tmp_path: pathlib.Path
) -> None:
    """The admin app mounted at /dispatch of the FastAPI example, under uvicorn: a tenant's
    token enqueues into its tenant and sees only its jobs; the operator's sees every one."""
    pytest.importorskip("dispatch_plugins.sqlite")
    ops, acme = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    tokens = [
        {"name": "ops", "token": ops, "scopes": ["admin"]},
        {"name": "acme", "token": acme, "scopes": ["jobs:read", "jobs:write"], "tenant": "acme"},
    ]
    server = start(
        "fastapi_app",
        f"sqlite:///{tmp_path / 'jobs.db'}",
        DISPATCH_ADMIN_TOKENS=json.dumps(tokens),
    )
    server.wait_ready()
    as_ops = {"Authorization": f"Bearer {ops}"}
    as_acme = {"Authorization": f"Bearer {acme}"}

    untenanted = server.http.post("/welcome", json={"user_id": 1, "email": "a@example.com"})
    enqueued = server.http.post(
        "/dispatch/v1/jobs",
        json={"name": "example.send_welcome", "payload": {"user_id": 2, "email": "b@x.org"}},
        headers=as_acme,
    )
    assert enqueued.status_code == 201, enqueued.text
    job = enqueued.json()
    assert job["tenant"] == "acme"
    done = server.wait_state(job["id"], "completed")  # run by the app's in-process worker
    assert done["result"] == {"sent_to": "b@x.org"}

    mine = server.http.get("/dispatch/v1/jobs", headers=as_acme).json()["items"]
    assert [x["id"] for x in mine] == [job["id"]]
    every = server.http.get("/dispatch/v1/jobs", headers=as_ops).json()["items"]
    assert {x["id"] for x in every} == {job["id"], untenanted.json()["id"]}
    other = server.http.get(f"/dispatch/v1/jobs/{untenanted.json()['id']}", headers=as_acme)
    assert other.status_code == 404
    assert server.http.get("/dispatch/v1/workers", headers=as_acme).status_code == 403
    assert server.http.get("/dispatch/v1/jobs").status_code == 401
    assert server.http.get("/dispatch/").status_code == 200
    assert server.stop(signal.SIGINT) == 0, server.log()


def test_workers_run_separately_with_run_worker_0(
    start: Callable[..., Server], tmp_path: pathlib.Path
) -> None:
    pytest.importorskip("dispatch_plugins.sqlite")
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    server = start("starlette_app", url, RUN_WORKER="0")
    server.wait_ready()
    job_id = server.http.post("/welcome", json={"user_id": 2, "email": "b@example.com"}).json()[
        "id"
    ]
    time.sleep(0.3)  # an in-process worker would have run it by now
    assert server.job(job_id)["state"] == "pending"

    # The worker command of docs/adapters/starlette.md, in burst mode so that it exits.
    worker = subprocess.run(
        [str(DISPATCH), "worker", "examples.starlette_app:engine", "--burst"],
        cwd=REPO,
        env={**os.environ, "DISPATCH_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 0, worker.stderr
    assert server.wait_state(job_id, "completed")["result"] == {"sent_to": "b@example.com"}
    assert server.stop(signal.SIGINT) == 0, server.log()
    assert "in-process Dispatch worker" not in server.log()


def test_a_store_that_cannot_open_stops_the_server_at_startup(
    start: Callable[..., Server], tmp_path: pathlib.Path
) -> None:
    pytest.importorskip("dispatch_plugins.sqlite")
    server = start("starlette_app", f"sqlite:///{tmp_path}/no-such-dir/jobs.db")
    assert server.proc.wait(30) != 0
    log = server.log()
    assert "app startup failed: Dispatch cannot open its store" in log
    assert "no-such-dir" in log
    assert "Application startup failed. Exiting." in log


@functools.cache
def postgres_problem() -> str | None:
    """Why the test PostgreSQL server cannot be used, or ``None`` when it can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except psycopg.Error as exc:
        return " ".join(str(exc).split())
    return None


@pytest.fixture
def pg_url(require_service: Callable[[str], None]) -> Iterator[str]:
    """A store URL on a fresh PostgreSQL schema, dropped afterwards."""
    problem = postgres_problem()
    if problem is not None:
        require_service(f"PostgreSQL at {PG_DSN} ({problem})")
    import psycopg

    schema = f"dispatch_test_{secrets.token_hex(5)}"
    yield f"{PG_DSN}{'&' if '?' in PG_DSN else '?'}schema={schema}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_example_app_on_postgresql(start: Callable[..., Server], pg_url: str) -> None:
    server = start("fastapi_app", pg_url)
    server.wait_ready()
    ids = [
        server.http.post("/welcome", json={"user_id": n, "email": f"u{n}@example.com"}).json()["id"]
        for n in range(20)
    ]
    for n, job_id in enumerate(ids):
        assert server.wait_state(job_id, "completed")["result"] == {"sent_to": f"u{n}@example.com"}
    assert server.stop(signal.SIGINT) == 0, server.log()
    jobs = stored_jobs(pg_url)
    assert {job.state for job in jobs.values()} == {JobState.COMPLETED}
    assert sorted(jobs) == sorted(ids)
