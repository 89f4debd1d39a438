"""Run the benchmark: ``python -m bench [--quick] [--only memory,sqlite,pg,...] [--out PATH]``."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import FULL, QUICK, REPO_ROOT, Metric, Sizes
from bench.report import SYSTEM_LABELS, compare, finish_meta, machine_meta, render, write_json

DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "latest.json"

#: ``--only`` names -> the systems they select (``huey`` runs both Huey variants, ``pg`` the
#: two PostgreSQL systems, ``redis`` the three Redis ones: Dispatch's Redis store, Celery with
#: the Redis broker and arq).
SELECTORS = {
    "memory": ["memory"],
    "sqlite": ["sqlite"],
    "huey": ["huey", "huey-normal"],
    "huey-default": ["huey"],
    "huey-normal": ["huey-normal"],
    "postgres": ["postgres"],
    "procrastinate": ["procrastinate"],
    "pg": ["postgres", "procrastinate"],
    "redis": ["redis", "celery", "arq"],
    "dispatch-redis": ["redis"],
    "celery": ["celery"],
    "celery-prefork": ["celery-prefork"],
    "arq": ["arq"],
    "workflows": ["wf-sqlite", "wf-postgres", "dbos"],
    "wf-sqlite": ["wf-sqlite"],
    "wf-postgres": ["wf-postgres"],
    "dbos": ["dbos"],
}
ORDER = [
    "memory",
    "sqlite",
    "huey",
    "huey-normal",
    "postgres",
    "procrastinate",
    "redis",
    "celery",
    "celery-prefork",
    "arq",
    "wf-sqlite",
    "wf-postgres",
    "dbos",
]
#: Run without ``--only``: everything but the opt-in Celery prefork variant (another minute
#: for a second Celery column that mostly measures the pool on 2 cores).
DEFAULT = [s for s in ORDER if s != "celery-prefork"]


def _systems(only: str | None) -> list[str]:
    if not only:
        return list(DEFAULT)
    chosen: set[str] = set()
    for name in (n.strip() for n in only.split(",")):
        if not name:
            continue
        if name not in SELECTORS:
            raise SystemExit(f"--only: unknown system {name!r}; choose from {', '.join(SELECTORS)}")
        chosen.update(SELECTORS[name])
    return [s for s in ORDER if s in chosen]


def _run_system(system: str, sizes: Sizes, workdir: Path) -> dict[str, Metric]:
    # Imported on demand: a missing optional peer only fails its own column.
    if system in ("wf-sqlite", "wf-postgres", "dbos"):
        from bench.workflows import run_workflows

        return run_workflows(system, sizes, workdir)
    if system in ("memory", "sqlite", "postgres", "redis"):
        from bench.dispatch_side import run_dispatch

        return run_dispatch(system, sizes, workdir)
    if system == "procrastinate":
        from bench.procrastinate_side import run_procrastinate

        return run_procrastinate(sizes, workdir)
    if system.startswith("celery"):
        from bench.celery_side import run_celery

        return run_celery(system, sizes, workdir)
    if system == "arq":
        from bench.arq_side import run_arq

        return run_arq(sizes, workdir)
    from bench.huey_side import run_huey

    return run_huey(system, sizes, workdir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark Dispatch (memory, SQLite, PostgreSQL and Redis stores) against "
        "Huey (SqliteHuey), Procrastinate (PostgreSQL), Celery (Redis broker) and arq (Redis); "
        "Dispatch workflows (SQLite, PostgreSQL) against DBOS Transact (PostgreSQL).",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument(
        "--only",
        metavar="SYSTEMS",
        help="comma-separated subset of: memory, sqlite, huey (both Huey variants), "
        "huey-default, huey-normal, postgres, procrastinate, pg (postgres + procrastinate), "
        "redis (dispatch-redis + celery + arq), dispatch-redis, celery, celery-prefork (not "
        "in the default run), arq, workflows (wf-sqlite + "
        "wf-postgres + dbos), wf-sqlite, wf-postgres, dbos; or otel alone (the cost of "
        "dispatch-otel: no plugin / API only / SDK on, its own table)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    if args.only is not None and args.only.strip() == "otel":
        # dispatch-otel's overhead: its own three-column table (bench/otel.py).
        from bench.otel import main as otel_main

        return otel_main(quick=args.quick, out=None if args.out == DEFAULT_OUT else args.out)

    # SIGTERM unwinds like Ctrl-C, so every child process is reaped and the temp dir removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = QUICK if args.quick else FULL
    systems = _systems(args.only)
    report: dict[str, Any] = {
        "meta": machine_meta(sizes, quick=args.quick, systems=systems),
        "systems": {},
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dispatch-bench-") as tmp:
        for system in systems:
            print(f"[bench] {SYSTEM_LABELS[system]} ...", file=sys.stderr, flush=True)
            workdir = Path(tmp) / system
            workdir.mkdir()
            t0 = time.perf_counter()
            entry: dict[str, Any] = {"label": SYSTEM_LABELS[system], "metrics": {}, "error": None}
            try:
                entry["metrics"] = _run_system(system, sizes, workdir)
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["elapsed_s"] = round(time.perf_counter() - t0, 2)
            report["systems"][system] = entry
            done = f"[bench] {SYSTEM_LABELS[system]} done in {entry['elapsed_s']:.1f}s"
            print(done, file=sys.stderr, flush=True)
    report["elapsed_s"] = round(time.perf_counter() - started, 2)
    finish_meta(report["meta"])
    report["comparison"] = compare(report)
    print(render(report))
    write_json(report, args.out)
    print(f"\nJSON written to {args.out}")
    return 1 if any(e["error"] for e in report["systems"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
