"""``make demo`` and ``make serve``: the demo runs to its expected outcome on SQLite, and the
demo app that ``make serve`` opens reads the very database the demo wrote."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DISPATCH = pathlib.Path(sys.executable).parent / "dispatch"

pytestmark = pytest.mark.slow


def _env(demo_dir: pathlib.Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DISPATCH_URL"}
    env["DEMO_DIR"] = str(demo_dir)
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_the_demo_completes_and_make_serve_opens_its_database(tmp_path: pathlib.Path) -> None:
    demo = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "summary: 401 completed" in demo.stdout, demo.stdout
    assert (tmp_path / "demo.db").exists()

    # What `make serve` runs: the demo app, with no DISPATCH_URL, from another directory.
    counts = subprocess.run(
        [str(DISPATCH), "jobs", "counts", "--app", "examples.demo_app:engine", "--json"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert counts.returncode == 0, counts.stdout + counts.stderr
    seen = json.loads(counts.stdout)
    assert seen["completed"] >= 401, seen
    assert seen["failed"] == 1, seen
    makefile = (ROOT / "Makefile").read_text()
    assert "dispatch serve examples.demo_app:engine" in makefile
    assert "DISPATCH_URL" not in makefile
