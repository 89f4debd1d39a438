"""Machine description, the comparison with targets, the printed table and the JSON file."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Sizes

__all__ = ["SYSTEM_LABELS", "machine_meta", "finish_meta", "compare", "render", "write_json"]

SYSTEM_LABELS = {
    "memory": "dispatch-memory",
    "sqlite": "dispatch-sqlite",
    "huey": "huey",
    "huey-normal": "huey-normal",
    "postgres": "dispatch-postgres",
    "procrastinate": "procrastinate",
    "redis": "dispatch-redis",
    "celery": "celery",
    "celery-prefork": "celery-prefork",
    "arq": "arq",
    "wf-sqlite": "dispatch-wf-sqlite",
    "wf-postgres": "dispatch-wf-postgres",
    "dbos": "dbos",
}

#: Systems without a bulk enqueue API: their bulk cell is a loop of single enqueues (``*``).
NO_BULK_API = ("huey", "huey-normal", "celery", "celery-prefork", "arq")

_PG_SYSTEMS = ("postgres", "procrastinate")
_REDIS_SYSTEMS = ("redis", "celery", "celery-prefork", "arq")
#: The workflow benchmark's systems (``bench.workflows``): a table of their own.
WORKFLOW_SYSTEMS = ("wf-sqlite", "wf-postgres", "dbos")
_WF_PG_SYSTEMS = ("wf-postgres", "dbos")

Report = dict[str, Any]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        return None


def finish_meta(meta: dict[str, Any]) -> None:
    """Record the load at the end: other work on the machine skews every number."""
    meta["loadavg_at_end"] = _loadavg()


def _services(systems: list[str]) -> dict[str, str]:
    """Server versions of the services the selected systems use."""
    from bench import services

    found: dict[str, str] = {}
    if any(s in _PG_SYSTEMS or s in _WF_PG_SYSTEMS for s in systems):
        found["postgresql"] = services.postgres_version()
    if any(s in _REDIS_SYSTEMS for s in systems):
        found["redis"] = services.redis_version()
    return found


def machine_meta(sizes: Sizes, *, quick: bool, systems: list[str]) -> dict[str, Any]:
    """Where and how the benchmark ran."""
    versions = {
        "dispatch-core": _version("dispatch-core"),
        "dispatch-sqlite": _version("dispatch-sqlite"),
        "huey": _version("huey"),
        "aiosqlite": _version("aiosqlite"),
    }
    if any(s in _PG_SYSTEMS for s in systems):
        versions["dispatch-postgres"] = _version("dispatch-postgres")
        versions["procrastinate"] = _version("procrastinate")
        versions["psycopg"] = _version("psycopg")
    if any(s in _WF_PG_SYSTEMS for s in systems):
        versions["dispatch-postgres"] = _version("dispatch-postgres")
        versions["psycopg"] = _version("psycopg")
    if "dbos" in systems:
        versions["dbos"] = _version("dbos")
        versions["sqlalchemy"] = _version("sqlalchemy")
    if "redis" in systems:
        versions["dispatch-redis"] = _version("dispatch-redis")
    if any(s.startswith("celery") for s in systems):
        versions["celery"] = _version("celery")
        versions["kombu"] = _version("kombu")
    if "arq" in systems:
        versions["arq"] = _version("arq")
    if any(s in _REDIS_SYSTEMS for s in systems):
        versions["redis-py"] = _version("redis")
    return {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "sqlite": sqlite3.sqlite_version,
        "loadavg_at_start": _loadavg(),
        "versions": versions,
        "services": _services(systems),
        "quick": quick,
        "systems": systems,
        "sizes": sizes.as_dict(),
        "argv": sys.argv[1:],
    }


# -- comparison ------------------------------------------------------------------------------------


def _get(report: Report, system: str, metric: str, field: str) -> float | None:
    entry = report["systems"].get(system)
    if not entry or entry.get("error"):
        return None
    value = entry["metrics"].get(metric, {}).get(field)
    return float(value) if value is not None else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


def compare(report: Report) -> list[dict[str, Any]]:
    """The headline comparisons, each with its target (``None``: informational)."""
    rows: list[dict[str, Any]] = []

    def add(
        key: str,
        label: str,
        value: float | None,
        unit: str,
        target: float | None = None,
        ok: Callable[[float], bool] | None = None,
        **extra: Any,
    ) -> None:
        rows.append(
            {
                "key": key,
                "label": label,
                "value": value,
                "unit": unit,
                "target": target,
                "ok": None if value is None or ok is None else bool(ok(value)),
                **extra,
            }
        )

    def rate(system: str, metric: str) -> float | None:
        return _get(report, system, metric, "rate")

    def p50(system: str) -> float | None:
        return _get(report, system, "pickup_latency", "p50_ms")

    def p99(system: str) -> float | None:
        return _get(report, system, "pickup_latency", "p99_ms")

    add(
        "sqlite_drain_vs_huey",
        "drain: Dispatch SQLite / huey",
        _ratio(rate("sqlite", "drain"), rate("huey", "drain")),
        "x",
        3.0,
        lambda v: v >= 3.0,
    )
    add(
        "sqlite_drain_vs_huey_normal",
        "drain: Dispatch SQLite / huey-normal",
        _ratio(rate("sqlite", "drain"), rate("huey-normal", "drain")),
        "x",
    )
    add(
        "sqlite_pickup_p50",
        "pickup p50: Dispatch SQLite (other process)",
        p50("sqlite"),
        "ms",
        5.0,
        lambda v: v <= 5.0,
        huey_p50_ms=p50("huey"),
        huey_normal_p50_ms=p50("huey-normal"),
    )
    add(
        "huey_vs_sqlite_pickup_p50",
        "pickup p50: huey / Dispatch SQLite",
        _ratio(p50("huey"), p50("sqlite")),
        "x",
    )
    add(
        "memory_drain",
        "drain: Dispatch memory",
        rate("memory", "drain"),
        "jobs/s",
        50_000.0,
        lambda v: v >= 50_000,
    )
    enqueue_pairs = (
        ("enqueue_single_sync", "enqueue single sync", "enqueue_single_sync"),
        ("enqueue_single_async", "enqueue single async (vs Huey sync)", "enqueue_single_sync"),
        ("enqueue_bulk", "enqueue bulk", "enqueue_bulk"),
    )
    for metric, label, huey_metric in enqueue_pairs:
        for peer in ("huey", "huey-normal"):
            add(
                f"sqlite_{metric}_vs_{peer.replace('-', '_')}",
                f"{label}: Dispatch SQLite / {SYSTEM_LABELS[peer]}",
                _ratio(rate("sqlite", metric), rate(peer, huey_metric)),
                "x",
            )

    # PostgreSQL: Dispatch's PostgreSQL store against Procrastinate (same server) and Celery.
    add(
        "pg_drain_vs_procrastinate",
        "drain: Dispatch PG / procrastinate",
        _ratio(rate("postgres", "drain"), rate("procrastinate", "drain")),
        "x",
        10.0,
        lambda v: v >= 10.0,
    )
    add(
        "pg_durable_drain_vs_procrastinate",
        "drain: Dispatch PG (worker_synchronous_commit=on) / procrastinate",
        _ratio(rate("postgres", "drain_durable_worker"), rate("procrastinate", "drain")),
        "x",
    )
    add(
        "pg_drain",
        "drain: Dispatch PG",
        rate("postgres", "drain"),
        "jobs/s",
        10_000.0,
        lambda v: v >= 10_000,
    )
    add(
        "pg_drain_prefetch",
        "drain: Dispatch PG with --prefetch (opt-in)",
        rate("postgres", "drain_prefetch"),
        "jobs/s",
    )
    add(
        "pg_enqueue_bulk",
        "enqueue bulk: Dispatch PG",
        rate("postgres", "enqueue_bulk"),
        "jobs/s",
        40_000.0,
        lambda v: v >= 40_000,
    )
    for metric, label in (
        ("enqueue_single_sync", "enqueue single sync: Dispatch PG"),
        ("enqueue_single_async", "enqueue single async: Dispatch PG"),
    ):
        add(
            f"pg_{metric}",
            label,
            rate("postgres", metric),
            "jobs/s",
            2_500.0,
            lambda v: v >= 2_500,
        )
    add(
        "pg_pickup_p50",
        "pickup p50: Dispatch PG (other process)",
        p50("postgres"),
        "ms",
        3.0,
        lambda v: v <= 3.0,
        procrastinate_p50_ms=p50("procrastinate"),
        celery_p50_ms=p50("celery"),
    )
    add(
        "pg_pickup_p99",
        "pickup p99: Dispatch PG (other process)",
        p99("postgres"),
        "ms",
        10.0,
        lambda v: v <= 10.0,
        procrastinate_p99_ms=p99("procrastinate"),
        celery_p99_ms=p99("celery"),
    )
    for metric, label, peer_metric in (
        ("enqueue_single_sync", "enqueue single sync", "enqueue_single_sync"),
        ("enqueue_single_async", "enqueue single async", "enqueue_single_async"),
        ("enqueue_bulk", "enqueue bulk", "enqueue_bulk"),
    ):
        add(
            f"pg_{metric}_vs_procrastinate",
            f"{label}: Dispatch PG / procrastinate",
            _ratio(rate("postgres", metric), rate("procrastinate", peer_metric)),
            "x",
        )
    add(
        "procrastinate_vs_pg_pickup_p50",
        "pickup p50: procrastinate / Dispatch PG",
        _ratio(p50("procrastinate"), p50("postgres")),
        "x",
    )
    for peer in ("celery", "celery-prefork"):
        key, label = peer.replace("-", "_"), SYSTEM_LABELS[peer]
        add(
            f"pg_drain_vs_{key}",
            f"drain: Dispatch PG / {label}",
            _ratio(rate("postgres", "drain"), rate(peer, "drain")),
            "x",
        )
        add(
            f"pg_enqueue_single_sync_vs_{key}",
            f"enqueue single sync: Dispatch PG / {label}",
            _ratio(rate("postgres", "enqueue_single_sync"), rate(peer, "enqueue_single_sync")),
            "x",
        )
        add(
            f"pg_enqueue_bulk_vs_{key}",
            f"enqueue bulk: Dispatch PG / {label}",
            _ratio(rate("postgres", "enqueue_bulk"), rate(peer, "enqueue_bulk")),
            "x",
        )
        add(
            f"{key}_vs_pg_pickup_p50",
            f"pickup p50: {label} / Dispatch PG",
            _ratio(p50(peer), p50("postgres")),
            "x",
        )

    # Redis: Dispatch's Redis store against Celery (Redis broker) and arq, same server.
    add(
        "redis_drain_vs_celery",
        "drain: Dispatch Redis / celery",
        _ratio(rate("redis", "drain"), rate("celery", "drain")),
        "x",
        5.0,
        lambda v: v >= 5.0,
    )
    add(
        "redis_drain_vs_arq",
        "drain: Dispatch Redis / arq",
        _ratio(rate("redis", "drain"), rate("arq", "drain")),
        "x",
    )
    add(
        "redis_drain_vs_celery_prefork",
        "drain: Dispatch Redis / celery-prefork",
        _ratio(rate("redis", "drain"), rate("celery-prefork", "drain")),
        "x",
    )
    add("redis_drain", "drain: Dispatch Redis", rate("redis", "drain"), "jobs/s")
    add(
        "redis_pickup_p50",
        "pickup p50: Dispatch Redis (other process)",
        p50("redis"),
        "ms",
        2.0,
        lambda v: v <= 2.0,
        celery_p50_ms=p50("celery"),
        arq_p50_ms=p50("arq"),
    )
    add(
        "redis_pickup_p99",
        "pickup p99: Dispatch Redis (other process)",
        p99("redis"),
        "ms",
        None,
        None,
        celery_p99_ms=p99("celery"),
        arq_p99_ms=p99("arq"),
    )
    for peer in ("celery", "arq"):
        key, label = peer, SYSTEM_LABELS[peer]
        for metric, mlabel in (
            ("enqueue_single_sync", "enqueue single sync"),
            ("enqueue_single_async", "enqueue single async"),
            ("enqueue_bulk", "enqueue bulk"),
        ):
            add(
                f"redis_{metric}_vs_{key}",
                f"{mlabel}: Dispatch Redis / {label}",
                _ratio(rate("redis", metric), rate(peer, metric)),
                "x",
            )
        add(
            f"{key}_vs_redis_pickup_p50",
            f"pickup p50: {label} / Dispatch Redis",
            _ratio(p50(peer), p50("redis")),
            "x",
        )

    # Workflows: 10 no-op steps per run, Dispatch (SQLite, PostgreSQL) against DBOS Transact.
    add(
        "wf_sqlite_runs", "workflows: Dispatch SQLite", rate("wf-sqlite", "workflow_runs"), "runs/s"
    )
    add("wf_pg_runs", "workflows: Dispatch PG", rate("wf-postgres", "workflow_runs"), "runs/s")
    add("wf_dbos_runs", "workflows: dbos", rate("dbos", "workflow_runs"), "runs/s")
    for key, label, system, metric in (
        ("wf_pg_vs_dbos", "Dispatch PG", "wf-postgres", "workflow_runs"),
        (
            "wf_pg_durable_vs_dbos",
            "Dispatch PG (worker_synchronous_commit=on)",
            "wf-postgres",
            "workflow_runs_durable_worker",
        ),
        ("wf_sqlite_vs_dbos", "Dispatch SQLite", "wf-sqlite", "workflow_runs"),
    ):
        add(
            key,
            f"workflows: {label} / dbos",
            _ratio(rate(system, metric), rate("dbos", "workflow_runs")),
            "x",
        )
    add(
        "wf_pg_vs_dbos_queue",
        "workflows: Dispatch PG / dbos queue (worker_concurrency=10)",
        _ratio(rate("wf-postgres", "workflow_runs"), rate("dbos", "workflow_runs_queue")),
        "x",
    )
    return rows


# -- rendering -------------------------------------------------------------------------------


def _fmt_rate(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _fmt_value(row: dict[str, Any]) -> str:
    v = row["value"]
    if v is None:
        return "n/a"
    unit = row["unit"]
    if unit == "x":
        return f"{v:.2f}x"
    if unit == "ms":
        return f"{v:.2f} ms"
    return f"{v:,.0f} {unit}"


def _fmt_target(row: dict[str, Any]) -> str:
    t = row["target"]
    if t is None:
        return ""
    unit = row["unit"]
    if unit == "x":
        return f"target >= {t:g}x"
    if unit == "ms":
        return f"target <= {t:g} ms"
    return f"target >= {t:,.0f} {unit}"


_Row = tuple[str, str, str, Callable[[float | None], str]]


def _table_rows(sizes: dict[str, Any]) -> list[_Row]:
    single, bulk, drain = f"{sizes['single']:,}", f"{sizes['bulk']:,}", f"{sizes['drain']:,}"
    c = sizes["concurrency"]
    return [
        (f"enqueue single, sync   x{single} (jobs/s)", "enqueue_single_sync", "rate", _fmt_rate),
        (f"enqueue single, async  x{single} (jobs/s)", "enqueue_single_async", "rate", _fmt_rate),
        (f"enqueue bulk, one call x{bulk} (jobs/s)", "enqueue_bulk", "rate", _fmt_rate),
        (f"drain {drain} no-op jobs, c={c} (jobs/s)", "drain", "rate", _fmt_rate),
        ("  same, plain def handler (jobs/s)", "drain_sync_handler", "rate", _fmt_rate),
        (f"  same, --prefetch {c} (jobs/s)", "drain_prefetch", "rate", _fmt_rate),
        (
            "  same, worker_synchronous_commit=on (jobs/s)",
            "drain_durable_worker",
            "rate",
            _fmt_rate,
        ),
        ("pickup latency of idle worker, p50 (ms)", "pickup_latency", "p50_ms", _fmt_ms),
        ("pickup latency of idle worker, p99 (ms)", "pickup_latency", "p99_ms", _fmt_ms),
        ("pickup latency of idle worker, max (ms)", "pickup_latency", "max_ms", _fmt_ms),
    ]


def _workflow_rows(sizes: dict[str, Any]) -> list[_Row]:
    n, c = f"{sizes.get('workflows', 0):,}", sizes["concurrency"]
    return [
        (f"{n} runs x 10 no-op steps, start+drain (runs/s)", "workflow_runs", "rate", _fmt_rate),
        ("  same, steps checkpointed (steps/s)", "workflow_runs", "steps_per_s", _fmt_rate),
        ("  start phase alone (runs/s)", "workflow_runs", "start_rate", _fmt_rate),
        (
            "  same, worker_synchronous_commit=on (runs/s)",
            "workflow_runs_durable_worker",
            "rate",
            _fmt_rate,
        ),
        (
            f"  DBOS queue, worker_concurrency={c} (runs/s)",
            "workflow_runs_queue",
            "rate",
            _fmt_rate,
        ),
    ]


_WORKFLOW_NOTES = [
    "Workflows: one workflow, 10 steps, each an async def no-op returning its index; timed from",
    "  the first start to the last run completed; afterwards every run is read back (completed,",
    "  right output, 10 completed steps) or the column fails.",
    "dispatch-wf-* = `await wf.astart(i)` for each run, then `await engine.drain(concurrency=10)`",
    "  in this process; a fresh SQLite file / PostgreSQL schema per measurement.",
    "dbos = DBOS Transact, @DBOS.workflow with 10 @DBOS.step, in a child process on a fresh",
    "  database of the same server: `await DBOS.start_workflow_async(wf, i)` for each run (DBOS",
    "  runs them at once, no concurrency limit), then every handle's result; queue row: a",
    "  queue with worker_concurrency=10, polling_interval_sec=0.01 (default 1 s), enqueue_async.",
    "  DBOS commits every write durably; Dispatch's step checkpoints are durable too, its",
    "  worker's claim/finish are not unless worker_synchronous_commit=on (that row).",
]

_HUEY_NOTES = [
    "* Huey has no bulk enqueue: task.map() enqueues and commits one job at a time.",
    "huey        = SqliteHuey defaults (WAL, synchronous=FULL: an fsync per commit).",
    "huey-normal = SqliteHuey with synchronous=NORMAL, the durability of Dispatch SQLite.",
    "Huey drain and pickup: consumer process, 10 thread workers, default polling",
    "  (0.1 s first idle wait, x1.15 backoff per empty poll, reset by each task found).",
]
_DISPATCH_NOTES = [
    "Dispatch: async def no-op handler unless noted; drain = await engine.drain(concurrency=10)",
    "  in this process; memory pickup: worker in this process, producer thread (sync enqueue);",
    "  SQLite/PostgreSQL/Redis pickup: worker in another process, producer here (sync enqueue).",
]
_PG_NOTES = [
    "PostgreSQL: one server for both, its settings as on the services line, unchanged.",
    "dispatch-postgres = a fresh schema per measurement; wakes remote workers by LISTEN/NOTIFY;",
    "  its worker's own writes (claim, finish) skip the WAL flush wait by default; the",
    "  worker_synchronous_commit=on row makes them wait, as Procrastinate's do.",
    "procrastinate = its own fresh database, PsycopgConnector (pool of 4); drain =",
    "  app.run_worker_async(concurrency=10, wait=False) in this process, async def no-op task;",
    "  pickup: Worker in another process (LISTEN/NOTIFY), producer here (sync task.defer).",
]
_REDIS_NOTES = [
    "dispatch-redis = Dispatch's Redis store on the same server as Celery and arq, a fresh key",
    "  prefix per measurement (?prefix=bench_<random>_<name>); every state change is one Lua",
    "  script; remote workers are woken by pub/sub (PUBLISH <prefix>:wake). Redis durability",
    "  is the server's (services line): without appendonly, nothing is written to disk.",
]
_CELERY_NOTES = [
    "* Celery has no bulk enqueue: group(...).apply_async() publishes one message per task.",
    "celery = Redis broker (persistence as on the services line), results off, worker process",
    "  --pool=threads --concurrency=10 (celery-prefork: --pool=prefork); drain timed from",
    "  worker_ready to the last task; the task counts itself with a Redis INCR. Celery has no",
    "  async enqueue API.",
]


def _arq_notes(report: Report) -> list[str]:
    metrics = report["systems"].get("arq", {}).get("metrics", {})
    slow_drain = metrics.get("drain_default_poll", {})
    slow_pickup = metrics.get("pickup_latency_default_poll", {})
    lines = [
        "* arq has no bulk enqueue: asyncio.gather of enqueue_job() calls (50 in flight), and no",
        "  sync API: the sync row drives loop.run_until_complete(pool.enqueue_job(...)).",
        "arq = worker process (max_jobs=10, keep_result=0) polling its queue every",
        "  poll_delay=0.01 s (arq's default is 0.5 s); drain timed from on_startup to the last",
        "  job; the job counts itself with a Redis INCR, as Celery's does.",
    ]
    if slow_drain or slow_pickup:
        drain = (
            f"drain {slow_drain['n']:,} jobs {_fmt_rate(slow_drain.get('rate'))} jobs/s"
            if slow_drain
            else "drain -"
        )
        pickup = (
            f"pickup p50 {_fmt_ms(slow_pickup.get('p50_ms'))} ms, "
            f"p99 {_fmt_ms(slow_pickup.get('p99_ms'))} ms"
            if slow_pickup
            else "pickup -"
        )
        lines += [f"  At arq's default poll_delay=0.5 s: {drain};", f"  {pickup}."]
    return lines


#: Extra fields of a comparison row printed beside it: field -> peer label.
_PEER_FIELDS = {
    "huey_p50_ms": "huey",
    "huey_normal_p50_ms": "huey-normal",
    "procrastinate_p50_ms": "procrastinate",
    "celery_p50_ms": "celery",
    "procrastinate_p99_ms": "procrastinate",
    "celery_p99_ms": "celery",
    "arq_p50_ms": "arq",
    "arq_p99_ms": "arq",
}


def _table(report: Report, systems: list[str], rows: list[_Row]) -> list[str]:
    """One table: a column per system, a line per row."""
    width = max(len(r[0]) for r in rows) + 2
    table: list[list[str]] = []
    for _, metric, field, fmt in rows:
        cells = []
        for s in systems:
            entry = report["systems"][s]
            if entry.get("error"):
                cells.append("ERROR")
                continue
            value = entry["metrics"].get(metric, {}).get(field)
            mark = "*" if s in NO_BULK_API and metric == "enqueue_bulk" else ""
            cells.append(fmt(value) + mark)
        table.append(cells)
    # Each column as wide as its label or widest cell, plus two spaces.
    cols = [
        max(len(SYSTEM_LABELS[s]), *(len(cells[i]) for cells in table)) + 2
        for i, s in enumerate(systems)
    ]
    lines = [
        "".ljust(width)
        + "".join(SYSTEM_LABELS[s].rjust(c) for s, c in zip(systems, cols, strict=True)),
        "-" * (width + sum(cols)),
    ]
    for (label, *_), cells in zip(rows, table, strict=True):
        lines.append(
            label.ljust(width) + "".join(v.rjust(c) for v, c in zip(cells, cols, strict=True))
        )
    return lines


def render(report: Report) -> str:
    """The human-readable result: header, one column per system, comparison, notes."""
    meta = report["meta"]
    sizes = meta["sizes"]
    systems = [s for s in meta["systems"] if s in report["systems"]]
    quick = " (--quick: tiny sizes, numbers are not meaningful)" if meta["quick"] else ""
    lines = [
        f"Dispatch benchmark{quick}",
        f"machine: nproc={meta['nproc']}  {meta['python']}  SQLite {meta['sqlite']}  "
        f"{meta['platform']}",
        "versions: " + "  ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"latency run: {sizes['latency']} jobs, {sizes['latency_gap_s'] * 1000:g} ms apart; "
        f"throughput: best of {sizes['repeats']} run(s) (Procrastinate, Celery, DBOS: "
        f"{sizes.get('peer_repeats', sizes['repeats'])}), each on a fresh store",
    ]
    start, end = meta.get("loadavg_at_start"), meta.get("loadavg_at_end")
    if start is not None and end is not None:
        load = f"load average (1 min): {start[0]:.2f} at start, {end[0]:.2f} at end"
        if max(start[0], end[0]) > 0.5 * (meta["nproc"] or 1):
            load += "  -- the machine was busy: expect low and noisy numbers"
        lines.append(load)
    lines.append("")
    services = meta.get("services") or {}
    if services:
        lines.insert(3, "services: " + "  ".join(f"{k} {v}" for k, v in services.items()))
    job_systems = [s for s in systems if s not in WORKFLOW_SYSTEMS]
    wf_systems = [s for s in systems if s in WORKFLOW_SYSTEMS]
    if job_systems:
        lines += [*_table(report, job_systems, _table_rows(sizes)), ""]
    if wf_systems:
        lines += [*_table(report, wf_systems, _workflow_rows(sizes)), ""]
    if any(s.startswith("huey") for s in systems):
        lines += [*_HUEY_NOTES, ""]
    if any(s in ("memory", "sqlite", "postgres", "redis") for s in systems):
        lines += [*_DISPATCH_NOTES, ""]
    if any(s in _PG_SYSTEMS for s in systems):
        lines += [*_PG_NOTES, ""]
    if "redis" in systems:
        lines += [*_REDIS_NOTES, ""]
    if any(s.startswith("celery") for s in systems):
        lines += [*_CELERY_NOTES, ""]
    if "arq" in systems:
        lines += [*_arq_notes(report), ""]
    if wf_systems:
        lines += [*_WORKFLOW_NOTES, ""]
    # Informational rows without a value (a system was not run) are left out.
    comparison = [
        r for r in report["comparison"] if r["value"] is not None or r["target"] is not None
    ]
    lines += ["Comparison", "----------"]
    label_w = max(len(r["label"]) for r in comparison) + 2
    for row in comparison:
        status = {True: "PASS", False: "FAIL", None: ""}[row["ok"]]
        if row["target"] is not None and row["value"] is None:
            status = "(not run)"
        line = f"{row['label'].ljust(label_w)}{_fmt_value(row).rjust(14)}  "
        line += f"{_fmt_target(row).ljust(24)}{status}"
        peers = [
            f"{name} {row[k]:.2f} ms" for k, name in _PEER_FIELDS.items() if row.get(k) is not None
        ]
        if peers:
            line += f"  ({', '.join(peers)})"
        lines.append(line.rstrip())
    errors = {s: e["error"] for s, e in report["systems"].items() if e.get("error")}
    if errors:
        lines += ["", "Errors"]
        for s, err in errors.items():
            first = err.splitlines()[0] if err else ""
            lines.append(f"  {SYSTEM_LABELS[s]}: {first}")
    elapsed = "  ".join(
        f"{SYSTEM_LABELS[s]} {report['systems'][s]['elapsed_s']:.1f}s" for s in systems
    )
    lines += ["", f"elapsed: {elapsed}  total {report['elapsed_s']:.1f}s"]
    return "\n".join(lines)


def write_json(report: Report, path: Path) -> None:
    """Write the report (creating the directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
