"""What the ``dispatch`` command line prints, by where it goes: on a terminal, tables fit its
width and headers are bold; piped or redirected, every cell is whole and nothing is styled;
``NO_COLOR`` (https://no-color.org) turns styles off everywhere."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from dispatch_core import hookimpl
from dispatch_core._plugins import make_plugin_manager
from dispatch_core.cli import cli, color_enabled, create_cli

LONG_NAME = "reports.quarterly.revenue_by_region_and_product_line.render_pdf"
LONG_QUEUE = "reports-for-the-finance-department-overnight"
LONG_ERROR = (
    "the ledger service refused the export of period 2024-Q3 for region EMEA-North because "
    "its upstream reconciliation batch 8812 had not finished; retry after 06:00 UTC"
)
ERROR_LINE = f"RuntimeError: {LONG_ERROR}"
ESC = "\x1b["

# An application whose import leaves one failed job (and its DLQ entry) with a long name,
# queue and error in its memory store, so that any process loading it has something to list.
APP = f"""
import asyncio

from dispatch_core import Engine

engine = Engine("memory://", load_entrypoints=False)


@engine.job(name={LONG_NAME!r}, queue={LONG_QUEUE!r}, max_retries=0)
def render(n: int) -> None:
    raise RuntimeError({LONG_ERROR!r})


render.enqueue(1)
asyncio.run(engine.drain())
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DISPATCH_APP", "DISPATCH_URL", "NO_COLOR", "COLUMNS", "LINES"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory holding ``longapp.py``, importable in-process and from a subprocess."""
    (tmp_path / "longapp.py").write_text(APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("longapp", None)
    yield tmp_path
    sys.modules.pop("longapp", None)


def run(
    *args: str, group: click.Group = cli, color: bool = False, env: dict[str, str] | None = None
) -> Result:
    result = CliRunner().invoke(group, list(args), color=color, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _dispatch() -> list[str]:
    script = shutil.which("dispatch", path=str(Path(sys.executable).parent))
    assert script, f"no dispatch script beside {sys.executable}"
    return [script]


def _env(**extra: str) -> dict[str, str]:
    drop = ("DISPATCH_", "NO_COLOR", "COLUMNS", "LINES")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return env | extra


def _row(output: str, needle: str) -> str:
    return next(line for line in output.splitlines() if needle in line)


# -- tables: whole cells when not on a terminal ---------------------------------------------------


@pytest.mark.parametrize("command", [["jobs", "ls"], ["dlq", "ls"]], ids=" ".join)
def test_a_table_not_on_a_terminal_prints_every_cell_whole(
    app_dir: Path, command: list[str]
) -> None:
    # COLUMNS says 80, as an exported shell variable would: it still must not cut the cells.
    result = run(*command, "--app", "longapp:engine", env={"COLUMNS": "80"})
    row = _row(result.stdout, LONG_NAME)
    assert LONG_QUEUE in row
    assert ERROR_LINE in row
    assert "..." not in result.stdout
    assert ESC not in result.stdout


@pytest.mark.slow
def test_a_piped_table_prints_every_cell_whole_and_plain(app_dir: Path) -> None:
    proc = subprocess.run(
        [*_dispatch(), "jobs", "ls", "--app", "longapp:engine"],
        cwd=app_dir, env=_env(COLUMNS="80"), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    row = _row(proc.stdout, LONG_NAME)
    assert LONG_QUEUE in row
    assert ERROR_LINE in row
    assert "..." not in proc.stdout
    assert ESC not in proc.stdout


# -- on a terminal: fitted, and bold unless NO_COLOR ----------------------------------------------


def _on_a_terminal(cwd: Path, args: list[str], env: dict[str, str], columns: int) -> str:
    """Run ``dispatch ARGS`` with stdout on a pseudo-terminal ``columns`` wide (no $COLUMNS:
    the width comes from the terminal itself); return what it printed there."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    try:
        proc = subprocess.Popen(
            [*_dispatch(), *args], cwd=cwd, env=env, stdout=follower, stderr=subprocess.PIPE
        )
    finally:
        os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the command closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        else:
            pytest.fail(f"dispatch {' '.join(args)} did not finish within 60 s")
    finally:
        os.close(leader)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        proc.stderr.close()
        if proc.wait(timeout=30) != 0:
            pytest.fail(f"dispatch {' '.join(args)} failed: {err}")
    return b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.mark.slow
def test_on_a_terminal_a_table_fits_its_width_with_a_bold_header(app_dir: Path) -> None:
    out = _on_a_terminal(app_dir, ["jobs", "ls", "--app", "longapp:engine"], _env(), 100)
    lines = out.splitlines()
    assert lines[0].startswith(f"{ESC}1mID")  # bold header
    assert all(len(line.replace(f"{ESC}1m", "").replace(f"{ESC}0m", "")) <= 100 for line in lines)
    assert "..." in lines[1]
    assert LONG_NAME not in out


@pytest.mark.slow
@pytest.mark.parametrize("value", ["1", "true", "0"])
def test_no_color_turns_styles_off_on_a_terminal(app_dir: Path, value: str) -> None:
    # Any non-empty value counts, "0" included (https://no-color.org).
    env = _env(NO_COLOR=value)
    out = _on_a_terminal(app_dir, ["jobs", "ls", "--app", "longapp:engine"], env, 100)
    assert out.startswith("ID")
    assert ESC not in out
    assert "..." in out  # still fitted to the terminal: NO_COLOR is about colour only


class _StyledPlugin:
    @hookimpl
    def dispatch_register_commands(self, cli: click.Group) -> None:
        @cli.command()
        def styled() -> None:
            """Print something red (added by a plugin)."""
            click.echo(click.style("red alert", fg="red"))


@pytest.mark.parametrize(
    ("no_color", "styled"), [(None, True), ("", True), ("1", False)], ids=["unset", "empty", "set"]
)
def test_no_color_reaches_every_command_plugin_commands_included(
    app_dir: Path, no_color: str | None, styled: bool
) -> None:
    group = create_cli(lambda: make_plugin_manager(plugins=[_StyledPlugin()]))
    env = {} if no_color is None else {"NO_COLOR": no_color}
    # color=True: the runner's output counts as a terminal, so only NO_COLOR can strip styles.
    plugin_out = run("styled", group=group, color=True, env=env).stdout
    table_out = run("jobs", "ls", "--app", "longapp:engine", color=True, env=env).stdout
    assert (f"{ESC}31mred alert" in plugin_out) is styled
    assert (ESC in table_out) is styled
    assert "red alert" in plugin_out
    assert table_out.split()[0].endswith("ID")


def test_color_enabled_for_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as terminal, open(os.devnull, "w") as file:
        assert color_enabled(terminal)
        assert not color_enabled(file)
        monkeypatch.setenv("NO_COLOR", "1")
        assert not color_enabled(terminal)
        monkeypatch.setenv("NO_COLOR", "")
        assert color_enabled(terminal)
    os.close(leader)


def test_the_help_says_how_output_depends_on_where_it_goes() -> None:
    text = " ".join(run("--help").stdout.split())
    assert "piped or redirected, they print every cell whole" in text
    assert "NO_COLOR" in text
    worker_help = " ".join(run("worker", "--help").stdout.split())
    assert "the worker goes on without them, and exits 0 after a clean stop" in worker_help


@pytest.mark.parametrize(("no_color", "styled"), [(None, True), ("1", False)], ids=["unset", "set"])
def test_no_color_holds_for_a_command_mounted_under_another_root(
    app_dir: Path, no_color: str | None, styled: bool
) -> None:
    # dispatch-flask mounts the core commands under `flask dispatch`: a root that is not ours.
    foreign = click.Group("flask", commands={"jobs": cli.commands["jobs"]})
    env = {} if no_color is None else {"NO_COLOR": no_color}
    out = run("jobs", "ls", "--app", "longapp:engine", group=foreign, color=True, env=env).stdout
    assert (ESC in out) is styled
    assert LONG_NAME in out
