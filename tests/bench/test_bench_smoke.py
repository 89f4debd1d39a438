"""Smoke tests of the benchmark: ``python -m bench --quick --only memory`` (and ``--only
postgres`` when PostgreSQL is up) runs and writes the JSON report with the expected shape; a
service that is down turns its columns into ``ERROR`` without stopping the run. No timing is
asserted: numbers depend on the machine."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

#: The PostgreSQL server the ``--only postgres`` smoke run uses (as the store tests do).
PG_DSN = os.environ.get(
    "DISPATCH_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)

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


@functools.cache
def _pg_problem() -> str | None:
    """Why PostgreSQL cannot be used, or ``None`` when it can."""
    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except psycopg.Error as exc:
        return " ".join(str(exc).split())
    return None


def _run_bench(
    args: list[str], out: Path, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", "--quick", *args, "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _pg_leftovers(prefix: str) -> list[str]:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        schemas = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (prefix + "%",)
        ).fetchall()
        databases = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'bench_procrastinate_%'"
        ).fetchall()
    return [str(r[0]) for r in (*schemas, *databases)]


@pytest.mark.slow
def test_quick_postgres_run_writes_the_report(
    tmp_path: Path, require_service: Callable[[str], None]
) -> None:
    problem = _pg_problem()
    if problem is not None:
        require_service(f"PostgreSQL at {PG_DSN} ({problem})")
    before = set(_pg_leftovers("bench_"))
    out = tmp_path / "latest.json"
    proc = _run_bench(["--only", "postgres"], out, {"BENCH_POSTGRES_URL": PG_DSN})
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "dispatch-postgres" in proc.stdout

    report: dict[str, Any] = json.loads(out.read_text())
    assert report["meta"]["systems"] == ["postgres"]
    assert "postgresql" in report["meta"]["services"]
    entry = report["systems"]["postgres"]
    assert entry["error"] is None
    metrics = entry["metrics"]
    for name in RATE_METRICS:
        assert metrics[name]["rate"] > 0, name
    latency = metrics["pickup_latency"]
    assert set(latency) >= set(LATENCY_FIELDS)
    assert latency["n"] == report["meta"]["sizes"]["latency"]
    assert "LISTEN/NOTIFY" in latency["worker"]

    rows = {row["key"]: row for row in report["comparison"]}
    assert rows["pg_drain"]["value"] == metrics["drain"]["rate"]
    assert rows["pg_drain"]["ok"] in (True, False)
    assert rows["pg_pickup_p50"]["value"] == latency["p50_ms"]
    # Procrastinate did not run: its ratio has no value rather than a bogus one.
    assert rows["pg_drain_vs_procrastinate"]["value"] is None
    # Every schema the run created is gone.
    assert set(_pg_leftovers("bench_")) <= before


@pytest.mark.slow
def test_services_down_make_error_columns(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    env = {
        # Nothing listens on port 1: refused at once.
        "BENCH_POSTGRES_URL": "postgresql://postgres@127.0.0.1:1/postgres",
        "BENCH_REDIS_URL": "redis://127.0.0.1:1/13",
    }
    proc = _run_bench(["--only", "pg,celery"], out, env, timeout=120)
    assert proc.returncode == 1, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "ERROR" in proc.stdout
    report: dict[str, Any] = json.loads(out.read_text())
    assert report["meta"]["systems"] == ["postgres", "procrastinate", "celery"]
    for system, service in (
        ("postgres", "PostgreSQL"),
        ("procrastinate", "PostgreSQL"),
        ("celery", "Redis"),
    ):
        error = report["systems"][system]["error"]
        assert error is not None, system
        assert f"{service} unavailable" in error, (system, error)
        assert report["systems"][system]["metrics"] == {}


def _check_workflow_metric(metric: dict[str, Any], n: int) -> None:
    assert set(metric) >= {"n", "seconds", "rate", "steps", "steps_per_s", "runs"}
    assert metric["n"] == n
    assert metric["steps"] == 10
    assert metric["rate"] > 0
    # Every run was read back: completed, with its output and 10 completed steps.
    assert metric["verified"] is True


@pytest.mark.slow
def test_quick_dispatch_workflows_on_sqlite_write_the_report(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    proc = _run_bench(["--only", "wf-sqlite"], out, timeout=120)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "dispatch-wf-sqlite" in proc.stdout
    assert "10 no-op steps" in proc.stdout

    report: dict[str, Any] = json.loads(out.read_text())
    assert report["meta"]["systems"] == ["wf-sqlite"]
    n = report["meta"]["sizes"]["workflows"]
    entry = report["systems"]["wf-sqlite"]
    assert entry["error"] is None
    metric = entry["metrics"]["workflow_runs"]
    _check_workflow_metric(metric, n)
    assert metric["concurrency"] == 10
    rows = {row["key"]: row for row in report["comparison"]}
    assert rows["wf_sqlite_runs"]["value"] == metric["rate"]
    # DBOS did not run: its ratio has no value rather than a bogus one.
    assert rows["wf_sqlite_vs_dbos"]["value"] is None


@pytest.mark.slow
def test_quick_workflows_against_dbos_write_the_report(
    tmp_path: Path, require_service: Callable[[str], None]
) -> None:
    problem = _pg_problem()
    if problem is not None:
        require_service(f"PostgreSQL at {PG_DSN} ({problem})")
    try:
        import dbos  # noqa: F401
    except ImportError:
        require_service("DBOS Transact (pip package dbos)")
    before = set(_pg_leftovers("bench_"))
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        dbs_before = {
            str(r[0])
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'bench_dbos_%'"
            ).fetchall()
        }
    out = tmp_path / "latest.json"
    proc = _run_bench(["--only", "workflows"], out, {"BENCH_POSTGRES_URL": PG_DSN})
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    for label in ("dispatch-wf-sqlite", "dispatch-wf-postgres", "dbos"):
        assert label in proc.stdout

    report: dict[str, Any] = json.loads(out.read_text())
    assert report["meta"]["systems"] == ["wf-sqlite", "wf-postgres", "dbos"]
    assert "dbos" in report["meta"]["versions"]
    n = report["meta"]["sizes"]["workflows"]
    systems = report["systems"]
    for system in ("wf-sqlite", "wf-postgres", "dbos"):
        assert systems[system]["error"] is None, system
        _check_workflow_metric(systems[system]["metrics"]["workflow_runs"], n)
    _check_workflow_metric(systems["wf-postgres"]["metrics"]["workflow_runs_durable_worker"], n)
    _check_workflow_metric(systems["dbos"]["metrics"]["workflow_runs_queue"], n)

    rows = {row["key"]: row for row in report["comparison"]}
    pg_rate = systems["wf-postgres"]["metrics"]["workflow_runs"]["rate"]
    dbos_rate = systems["dbos"]["metrics"]["workflow_runs"]["rate"]
    assert rows["wf_pg_vs_dbos"]["value"] == round(pg_rate / dbos_rate, 2)
    assert rows["wf_pg_vs_dbos_queue"]["value"] is not None
    # Every schema and database the run created is gone.
    assert set(_pg_leftovers("bench_")) <= before
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        dbs_after = {
            str(r[0])
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'bench_dbos_%'"
            ).fetchall()
        }
    assert dbs_after <= dbs_before
