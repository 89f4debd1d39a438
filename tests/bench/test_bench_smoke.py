"""Smoke test of the benchmark: ``python -m bench --quick --only memory`` runs and writes the
JSON report with the expected shape. No timing is asserted: numbers depend on the machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

RATE_METRICS = (
    "enqueue_single_sync",
    "enqueue_single_async",
    "enqueue_bulk",
    "drain",
    "drain_sync_handler",
)
LATENCY_FIELDS = ("n", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms")


@pytest.mark.slow
def test_quick_memory_run_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "memory", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "dispatch-memory" in proc.stdout
    assert "Comparison" in proc.stdout

    report = json.loads(out.read_text())
    assert set(report) >= {"meta", "systems", "comparison", "elapsed_s"}
    meta = report["meta"]
    assert meta["quick"] is True
    assert meta["systems"] == ["memory"]
    assert {"nproc", "python", "sqlite", "versions", "sizes"} <= set(meta)

    memory = report["systems"]["memory"]
    assert memory["error"] is None
    metrics = memory["metrics"]
    for name in RATE_METRICS:
        assert set(metrics[name]) >= {"n", "seconds", "rate"}, name
        assert metrics[name]["rate"] > 0, name
    latency = metrics["pickup_latency"]
    assert set(latency) >= set(LATENCY_FIELDS)
    assert latency["n"] == meta["sizes"]["latency"]

    keys = {row["key"] for row in report["comparison"]}
    assert {"sqlite_drain_vs_huey", "sqlite_pickup_p50", "memory_drain"} <= keys
    memory_drain = next(r for r in report["comparison"] if r["key"] == "memory_drain")
    assert memory_drain["value"] == metrics["drain"]["rate"]
    assert memory_drain["ok"] in (True, False)
    # Systems that did not run give no value rather than a bogus one.
    sqlite_ratio = next(r for r in report["comparison"] if r["key"] == "sqlite_drain_vs_huey")
    assert sqlite_ratio["value"] is None
    assert sqlite_ratio["ok"] is None


@pytest.mark.slow
def test_unknown_system_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "rabbitmq"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "unknown system 'rabbitmq'" in proc.stderr
