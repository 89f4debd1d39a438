"""``dispatch worker`` stops on SIGTERM and SIGINT even when nobody reads its output any more:
its stdout and stderr are pipes whose read ends are closed (a log collector gone, ``| head``).

A worker whose signal message hit the broken pipe before it called ``stop()`` once ignored
every signal until SIGKILL. The output of a worker is its report, not its work: a dead reader
neither keeps it up nor changes its exit status (0 after a clean stop).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatch_core.cli._worker import _StderrHandler

HERE = Path(__file__).parent
STOP_WITHIN = 20.0  # seconds; the job takes 0.3 s and --grace is 30 s

# A worker app. Its job ``chatty.talk`` says it started, logs for a while (with
# CHATTY_LOGGING=1 through the application's own logging setup: logging.basicConfig, a stdlib
# StreamHandler on stderr) and says it finished; ``chatty.stuck`` is a sync handler that
# blocks its thread far longer than any test runs.
APP = """
import asyncio
import logging
import os
import time
from pathlib import Path

from dispatch_core import Engine

if os.environ.get("CHATTY_LOGGING"):
    logging.basicConfig(level=logging.INFO)

log = logging.getLogger("chatty")
engine = Engine("memory://", load_entrypoints=False)
here = Path(os.environ["CHATTY_DIR"])


@engine.job(name="chatty.talk")
async def talk(seconds: float) -> str:
    (here / "started").write_text("started")
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        log.info("still talking %s", "x" * 200)
        await asyncio.sleep(0.01)
    (here / "finished").write_text("finished")
    return "done"


@engine.job(name="chatty.stuck")
def stuck(seconds: float) -> None:
    (here / "started").write_text("started")
    time.sleep(seconds)


engine.enqueue(os.environ["CHATTY_JOB"], float(os.environ["CHATTY_SECONDS"]))
"""


def _dispatch_command() -> list[str]:
    script = shutil.which("dispatch", path=str(Path(sys.executable).parent))
    assert script, f"no dispatch script beside {sys.executable}"
    return [script]


def _start(
    tmp_path: Path,
    *extra: str,
    job: str = "chatty.talk",
    seconds: float = 0.3,
    app_logging: bool = False,
    stdout: int = subprocess.PIPE,
) -> subprocess.Popen[bytes]:
    """Start ``dispatch worker chatty:engine`` with piped output (or ``stdout``); return once
    its job runs."""
    (tmp_path / "chatty.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    env |= {"CHATTY_DIR": str(tmp_path), "CHATTY_JOB": job, "CHATTY_SECONDS": str(seconds)}
    if app_logging:
        env["CHATTY_LOGGING"] = "1"
    proc = subprocess.Popen(
        [*_dispatch_command(), "worker", "chatty:engine", "--poll-interval", "0.1", *extra],
        cwd=tmp_path, env=env, stdout=stdout, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the job never started\nstdout: {out!r}\nstderr: {err!r}")
        time.sleep(0.02)
    return proc


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Workers a test starts: killed if still running, their pipes closed, at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()


def _wait(proc: subprocess.Popen[bytes], what: str) -> int:
    """The exit status, or a failure if the worker is still up after STOP_WITHIN seconds."""
    try:
        return proc.wait(timeout=STOP_WITHIN)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"the worker ignored {what}: still running {STOP_WITHIN:g}s later")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_worker_with_closed_output_pipes_stops_on_a_signal(
    tmp_path: Path, sig: signal.Signals, procs: list[subprocess.Popen[bytes]]
) -> None:
    proc = _start(tmp_path)
    procs.append(proc)
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()
    proc.send_signal(sig)
    assert _wait(proc, sig.name) == 0
    assert (tmp_path / "finished").exists(), "the running job was not allowed to finish"


@pytest.mark.slow
def test_a_worker_whose_app_logs_to_a_closed_stderr_stops_cleanly(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    # The application's own StreamHandler meets the broken pipe on every record (logging's
    # handleError then fails to print its traceback too); the worker still stops, exit 0.
    proc = _start(tmp_path, seconds=0.5, app_logging=True)
    procs.append(proc)
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stderr.close()
    proc.send_signal(signal.SIGTERM)
    assert _wait(proc, "SIGTERM") == 0
    assert (tmp_path / "finished").exists()
    out = proc.stdout.read().decode()
    assert out.startswith("Dispatch worker wkr_")
    assert "1 completed" in out


@pytest.mark.slow
def test_a_closed_stdout_does_not_fail_the_exit_summary(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    proc = _start(tmp_path)
    procs.append(proc)
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()
    proc.send_signal(signal.SIGTERM)
    assert _wait(proc, "SIGTERM") == 0
    err = proc.stderr.read().decode()
    assert "SIGTERM: stopping" in err
    assert "Traceback" not in err
    assert "Exception ignored" not in err
    assert (tmp_path / "finished").exists()


@pytest.mark.slow
def test_a_worker_whose_stdout_is_closed_from_the_start_runs_and_stops(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    # The banner meets the broken pipe: the worker goes on without it.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = _start(tmp_path, stdout=write_end)
    finally:
        os.close(write_end)
    procs.append(proc)
    assert proc.stderr is not None
    proc.send_signal(signal.SIGTERM)
    assert _wait(proc, "SIGTERM") == 0
    assert (tmp_path / "finished").exists()
    err = proc.stderr.read().decode()
    assert "SIGTERM: stopping" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_stuck_sync_handler_and_closed_pipes_do_not_keep_the_worker_up(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    # The last words on the way out (the stuck-thread notice, the flushes before os._exit)
    # meet the broken pipes too; a failure there would leave Python waiting for the thread.
    proc = _start(tmp_path, "--grace", "0.2", job="chatty.stuck", seconds=600)
    procs.append(proc)
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()
    proc.send_signal(signal.SIGTERM)
    assert _wait(proc, "SIGTERM") == 0


def test_the_log_handler_silences_a_stderr_whose_reader_is_gone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = os.fdopen(write_end, "w")
    try:
        handler = _StderrHandler(stream)
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "x" * 100, None, None)
        handler.handle(record)  # EPIPE: the stream is pointed at /dev/null instead
        handler.handle(record)  # and later records go there quietly
        assert os.path.samestat(os.fstat(write_end), os.stat(os.devnull))
    finally:
        stream.close()
    # logging's own handleError would have printed "--- Logging error ---" for each.
    assert "Logging error" not in capsys.readouterr().err
