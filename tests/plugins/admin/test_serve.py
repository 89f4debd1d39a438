"""``dispatch serve``: refuses to start without tokens, serves the API and the dashboard, makes
a dev token on request, runs a worker, and stops cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from starlette.testclient import TestClient

from dispatch_core import ConfigurationError, Engine
from dispatch_core.cli import cli
from dispatch_plugins.admin.auth import Token
from dispatch_plugins.admin.serve import build_app, login_url, normalize_prefix

#: Upper bound for the server to start, run a job or stop: a failsafe, not a measurement.
DEADLINE = 60.0
TOKEN = "serve-test-token-0123456789"

APP_MODULE = """
from dispatch_core import Engine

engine = Engine("sqlite:///served.db")


@engine.job(name="served.add")
def add(x: int) -> int:
    return x + 1
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DISPATCH_") and not name.startswith("DISPATCH_TEST_"):
            monkeypatch.delenv(name)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["serve", *args], catch_exceptions=False)


def one_error_line(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def tokens_file(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "tokens.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


# -- refusals (nothing is served) ------------------------------------------------------------------


def test_serve_is_a_dispatch_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert "serve" in result.stdout
    help_text = run("--help").stdout
    for option in ("--host", "--port", "--prefix", "--tokens-file", "--worker", "--dev-token"):
        assert option in help_text


def test_refuses_to_start_without_tokens(tmp_path: Path) -> None:
    line = one_error_line(run("--url", f"sqlite:///{tmp_path / 'x.db'}"))
    assert "no admin tokens configured" in line
    assert "--tokens-file" in line
    assert "DISPATCH_ADMIN_TOKENS" in line
    assert "--dev-token" in line


def test_refuses_a_dev_token_on_a_public_address(tmp_path: Path) -> None:
    line = one_error_line(run("--url", "memory://", "--dev-token", "--host", "0.0.0.0"))
    assert line.startswith("Error: --dev-token is refused with --host 0.0.0.0")
    for host in ("192.168.1.10", "example.com", "::"):
        assert run("--url", "memory://", "--dev-token", "--host", host).exit_code == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        ([{"name": "ops", "token": "short", "scopes": ["admin"]}], "at least 16 characters"),
        ([{"name": "ops", "token": TOKEN, "scopes": ["root"]}], "unknown token scope"),
    ],
    ids=["json", "short", "scope"],
)
def test_refuses_a_bad_tokens_file(tmp_path: Path, content: object, message: str) -> None:
    path = tokens_file(tmp_path, content)
    line = one_error_line(run("--url", "memory://", "--tokens-file", str(path)))
    assert f"cannot load the admin tokens from {path}" in line
    assert message in line
    assert TOKEN not in line


def test_refuses_a_missing_tokens_file(tmp_path: Path) -> None:
    line = one_error_line(run("--url", "memory://", "--tokens-file", str(tmp_path / "nope.json")))
    assert "cannot load the admin tokens" in line


def test_reads_tokens_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH_ADMIN_TOKENS", "[]")
    assert "no admin tokens configured" in one_error_line(run("--url", "memory://"))
    monkeypatch.setenv("DISPATCH_ADMIN_TOKENS", "{")
    assert "DISPATCH_ADMIN_TOKENS" in one_error_line(run("--url", "memory://"))


def test_a_worker_needs_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    line = one_error_line(run("--url", "memory://", "--worker", "--dev-token"))
    assert "--worker needs APP" in line


def test_refuses_an_admin_api_url() -> None:
    line = one_error_line(run("--url", "http://127.0.0.1:8000/dispatch", "--dev-token"))
    assert "'dispatch serve' works on the store itself" in line


def test_a_store_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "not-a-database.db"
    path.write_bytes(b"this is not a SQLite database, " * 100)
    line = one_error_line(run("--url", f"sqlite:///{path}", "--dev-token"))
    assert "not-a-database.db" in line


def test_the_app_can_live_at_the_root() -> None:
    engine = Engine("memory://", load_entrypoints=False)
    app = build_app(engine, tokens=[Token(name="ops", secret=TOKEN, scopes={"admin"})], prefix="/")
    with TestClient(app) as http:
        assert http.get("/v1/health/live").json() == {"status": "ok"}
        jobs = http.get("/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert jobs.json() == {"items": [], "next_cursor": None}


def test_worker_options_are_checked_when_the_app_is_built() -> None:
    engine = Engine("memory://", load_entrypoints=False)
    with pytest.raises(ConfigurationError):
        build_app(engine, tokens=[], worker_options={"concurrency": 0})


def test_urls() -> None:
    assert normalize_prefix("dispatch/") == "/dispatch"
    assert normalize_prefix("/") == normalize_prefix("") == "/"
    assert login_url("127.0.0.1", 8000, "/dispatch") == "http://127.0.0.1:8000/dispatch/"
    assert login_url("::1", 80, "/", "t") == "http://[::1]:80/#token=t"


# -- serving (a real process) ----------------------------------------------------------------------


class Served:
    """A ``dispatch serve`` process and its stderr, line by line."""

    def __init__(self, cwd: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dispatch_core.cli", "serve", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first stderr line (from here on) matching ``pattern``."""
        while True:
            line = self.lines.get(timeout=DEADLINE)
            if line is None:
                raise AssertionError(f"server exited; stderr:\n{''.join(self.stderr)}")
            self.stderr.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def stop(self, sig: signal.Signals) -> int:
        """Send ``sig``; return the exit status, with the rest of stderr read."""
        self.process.send_signal(sig)
        status = self.process.wait(timeout=DEADLINE)
        while (line := self.lines.get(timeout=DEADLINE)) is not None:
            self.stderr.append(line)
        return status

    def kill(self) -> None:
        """Make sure the process is gone and its pipe closed."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.reader.join(DEADLINE)
        assert self.process.stderr is not None
        self.process.stderr.close()


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "servedapp.py").write_text(APP_MODULE)
    return tmp_path


@pytest.fixture
def serve_process(app_dir: Path) -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for served in started:
        served.kill()


def start(started: list[Served], cwd: Path, *args: str) -> Served:
    served = Served(cwd, *args)
    started.append(served)
    return served


@pytest.mark.slow
def test_dev_token_serves_the_api_and_stops_on_sigterm(
    app_dir: Path, serve_process: list[Served]
) -> None:
    served = start(serve_process, app_dir, "servedapp:engine", "--port", "0", "--dev-token")
    login = served.wait_for(r"dashboard login: (http://127\.0\.0\.1:(\d+)/dispatch/)#token=(\S+)")
    base, port, token = login.group(1), login.group(2), login.group(3)
    assert len(token) >= 32
    assert f"Dispatch admin for sqlite:///served.db at {base}" in "".join(served.stderr)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
        assert http.get("/dispatch/v1/health/live").json() == {"status": "ok"}
        assert http.get("/dispatch/v1/jobs").status_code == 401
        authorized = {"Authorization": f"Bearer {token}"}
        assert http.get("/dispatch/v1/jobs", headers=authorized).json() == {
            "items": [],
            "next_cursor": None,
        }
        root = http.get("/")
        assert (root.status_code, root.headers["location"]) == (307, "/dispatch/")
    assert served.stop(signal.SIGTERM) == 0
    stderr = "".join(served.stderr)
    assert "Application shutdown complete" in stderr
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_tokens_file_worker_and_sigint(app_dir: Path, serve_process: list[Served]) -> None:
    path = tokens_file(app_dir, [{"name": "ops", "token": TOKEN, "scopes": ["admin"]}])
    served = start(
        serve_process,
        app_dir,
        "servedapp:engine",
        "--port",
        "0",
        "--prefix",
        "/ops/",
        "--tokens-file",
        str(path),
        "--worker",
    )
    found = served.wait_for(r"at http://127\.0\.0\.1:(\d+)/ops/ .*, with a worker")
    assert not any("token=" in line for line in served.stderr)
    api = f"http://127.0.0.1:{found.group(1)}/ops/v1"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=api, headers=headers) as http:
        created = http.post("/jobs", json={"name": "served.add", "payload": 41})
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + DEADLINE
        while (job := http.get(f"/jobs/{job_id}").json())["state"] != "completed":
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["result"] == 42
    assert served.stop(signal.SIGINT) == 0
    stderr = "".join(served.stderr)
    assert "Application shutdown complete" in stderr
    assert "Traceback" not in stderr
