"""The CLI never writes a job's text raw to the terminal: an error, a name or a payload comes
from whoever enqueued or ran the job, and an escape sequence in it (an OSC title or clipboard
write, a cursor move, a bidirectional override) would act on the operator's terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from dispatch_core.cli import cli
from dispatch_core.cli._format import printable

HOSTILE = "boom \x1b]0;pwned\x07 \x1b]52;c;Y3VybCBldmlsLnNo\x07 \x1b[2J \x9b31m \u202eevil\tx"

APP = f"""
import asyncio

from dispatch_core import Engine

engine = Engine("memory://", load_entrypoints=False)


@engine.job(name="hostile", max_retries=0)
def hostile(text: str) -> None:
    raise RuntimeError({HOSTILE!r})


job = hostile.enqueue({HOSTILE!r})
asyncio.run(engine.drain())
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "hostileapp.py").write_text(APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    for var in ("DISPATCH_APP", "DISPATCH_URL"):
        monkeypatch.delenv(var, raising=False)
    sys.modules.pop("hostileapp", None)
    yield "hostileapp:engine"
    sys.modules.pop("hostileapp", None)


def _control_free(text: str) -> bool:
    return not any(
        (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F or 0x202A <= ord(c) <= 0x202E
        for c in text
    )


def test_printable_escapes_controls_and_keeps_newlines() -> None:
    assert printable("a\x1b[31mb") == "a\\x1b[31mb"
    assert printable("x\u202ey") == "x\\u202ey"
    assert printable("one\ntwo\tthree") == "one\ntwo\\x09three"
    assert printable("plain ü 日本") == "plain ü 日本"


@pytest.mark.parametrize(
    "command",
    [["jobs", "ls"], ["dlq", "ls"], ["jobs", "ls", "--state", "failed"]],
    ids=" ".join,
)
def test_listings_show_escape_sequences_as_text(app: str, command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--app", app], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "hostile" in result.output
    assert "\\x1b]0;pwned" in result.output
    assert _control_free(result.output), repr(result.output)


def test_jobs_show_escapes_the_error_and_the_payload(app: str) -> None:
    import hostileapp  # the module the CLI loads: its job id

    result = CliRunner().invoke(
        cli, ["jobs", "show", hostileapp.job.id, "--app", app], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "\\x1b]52;c;" in result.output  # the clipboard write, shown, not performed
    assert _control_free(result.output), repr(result.output)
