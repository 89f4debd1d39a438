"""Durable workflows: a 10-step workflow of no-op steps, runs per second.

* ``wf-sqlite`` / ``wf-postgres`` (Dispatch): ``sizes.workflows`` runs started one at a time
  with ``await definition.astart(i)``, then drained by ``engine.drain(concurrency=10)`` in this
  process; timed from the first start to the end of the drain. Each run is one driver job that
  checkpoints its 10 steps in the store. A fresh store per measurement (SQLite file, or
  PostgreSQL schema).
* ``dbos`` (DBOS Transact): the same workflow (``@DBOS.workflow`` with 10 ``@DBOS.step``
  no-ops, :mod:`bench.dbos_app`) in a child process, on a fresh PostgreSQL database per
  measurement (``bench_dbos_<random>``, dropped at the end), timed from the first start to the
  last result: ``DBOS.start_workflow_async`` (DBOS runs each at once, no concurrency limit) and,
  as the setup closest to Dispatch's worker, a queue with ``worker_concurrency=10``.

Every measurement reads the runs back afterwards (untimed): each must be completed with the
expected output and 10 completed steps, or the measurement fails.

Also the entry point of the DBOS child process::

    python -m bench.workflows dbos --url postgresql://.../bench_dbos_x --n 1000 \
        --mode direct --out result.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from bench.common import (
    BenchError,
    Metric,
    Sizes,
    best_of,
    child_process,
    finish_child,
    log_tail,
    rate_metric,
)
from bench.dispatch_side import bench_engine
from bench.services import PgSchemas, check_postgres, fresh_database
from dispatch_core import Engine, RunState, StepState, Workflow, WorkflowDefinition

__all__ = ["STEPS", "WORKFLOW_SYSTEMS", "run_workflows", "expected_output"]

#: Steps per workflow run.
STEPS = 10
#: ``--only`` system names measured here.
WORKFLOW_SYSTEMS = ("wf-sqlite", "wf-postgres", "dbos")
#: DBOS queue polling interval of the queue row (DBOS's default, 1 s, caps a queue with
#: ``worker_concurrency=10`` at about 10 workflow starts per second).
DBOS_QUEUE_POLL_S = 0.01

WF_NAME = "bench.ten_steps"
#: PostgreSQL store URL parameter of the durable-worker row (see ``bench.dispatch_side``).
DURABLE_WORKER = "worker_synchronous_commit=on"


def expected_output(n: int) -> int:
    """What run ``n`` returns: its input plus the sum of its steps' results."""
    return n + sum(range(STEPS))


async def _noop_step(i: int) -> int:
    return i


def _make_engine(url: str) -> tuple[Engine, WorkflowDefinition[int, int]]:
    engine = bench_engine(url)  # the store's plugin only (see bench.dispatch_side)

    @engine.workflow(name=WF_NAME)
    async def ten_steps(wf: Workflow, n: int) -> int:
        total = 0
        for i in range(STEPS):
            total += int(await wf.step(f"s{i}", _noop_step, i))
        return n + total

    return engine, ten_steps


# -- Dispatch --------------------------------------------------------------------------------------


async def _verify_dispatch(engine: Engine, n: int) -> None:
    """Every run completed with its output and ``STEPS`` completed steps (untimed)."""
    runs = await engine.alist_runs(name=WF_NAME, limit=n + 1)
    if len(runs) != n:
        raise BenchError(f"found {len(runs)} workflow runs, expected {n}")
    not_done = [r for r in runs if r.state is not RunState.COMPLETED]
    if not_done:
        raise BenchError(f"{len(not_done)} runs not completed, e.g. {not_done[0]}")
    wrong = [r for r in runs if r.output != expected_output(int(r.input))]
    if wrong:
        raise BenchError(f"{len(wrong)} runs with a wrong output, e.g. {wrong[0]}")
    for run in runs:
        steps = await engine.atimeline(run.id)
        done = [s for s in steps if s.state is StepState.COMPLETED]
        if len(steps) != STEPS or len(done) != STEPS:
            raise BenchError(f"run {run.id} has {len(done)}/{len(steps)} completed steps")


async def _dispatch_once(url: str, sizes: Sizes) -> Metric:
    engine, ten_steps = _make_engine(url)
    n = sizes.workflows
    async with engine:
        t0 = time.perf_counter()
        for i in range(n):
            await ten_steps.astart(i)
        started = time.perf_counter()
        stats = await engine.drain(concurrency=sizes.concurrency, timeout=sizes.child_deadline)
        end = time.perf_counter()
        if stats.completed != n:
            raise BenchError(f"drain completed {stats.completed} driver jobs, expected {n}")
        await _verify_dispatch(engine, n)
    return rate_metric(
        n,
        end - t0,
        steps=STEPS,
        concurrency=sizes.concurrency,
        start_s=round(started - t0, 6),
        drain_s=round(end - started, 6),
        start_rate=round(n / (started - t0), 1),
        drain_rate=round(n / (end - started), 1),
        steps_per_s=round(n * STEPS / (end - t0), 1),
        verified=True,
    )


@contextlib.contextmanager
def _dispatch_stores(system: str, workdir: Path) -> Iterator[Any]:
    if system == "wf-sqlite":
        yield lambda name: f"sqlite:///{workdir / name}.db"
    else:
        with PgSchemas() as schemas:
            yield schemas.url


def _run_dispatch(system: str, sizes: Sizes, workdir: Path) -> dict[str, Metric]:
    runs: list[Metric] = []
    durable: list[Metric] = []
    with _dispatch_stores(system, workdir) as url_for:
        for rep in range(sizes.repeats):
            runs.append(asyncio.run(_dispatch_once(url_for(f"workflows_{rep}"), sizes)))
            if system == "wf-postgres":
                # The worker's claim and finish wait for the WAL flush too, as DBOS's do.
                url = f"{url_for(f'workflows_durable_{rep}')}&{DURABLE_WORKER}"
                durable.append(asyncio.run(_dispatch_once(url, sizes)))
    results = {"workflow_runs": best_of(runs)}
    if durable:
        results["workflow_runs_durable_worker"] = {**best_of(durable), "url_param": DURABLE_WORKER}
    return results


# -- DBOS Transact ---------------------------------------------------------------------------------


def _verify_dbos(url: str, n: int) -> None:
    """The system database holds ``n`` successful workflows and ``n * STEPS`` step outputs."""
    with psycopg.connect(url, autocommit=True) as conn:
        statuses: dict[object, object] = dict(
            conn.execute(
                "SELECT status, count(*) FROM dbos.workflow_status"
                " WHERE name LIKE %s GROUP BY status",
                ("%ten_steps",),
            ).fetchall()
        )
        row = conn.execute(
            "SELECT count(*) FROM dbos.operation_outputs o"
            " JOIN dbos.workflow_status w ON w.workflow_uuid = o.workflow_uuid"
            " WHERE w.name LIKE %s AND o.error IS NULL",
            ("%ten_steps",),
        ).fetchone()
    steps = int(row[0]) if row else 0
    if statuses != {"SUCCESS": n}:
        raise BenchError(f"DBOS workflow states {statuses}, expected {{'SUCCESS': {n}}}")
    if steps != n * STEPS:
        raise BenchError(f"DBOS recorded {steps} step outputs, expected {n * STEPS}")


def _dbos_once(mode: str, sizes: Sizes, workdir: Path, rep: int) -> Metric:
    out = workdir / f"dbos_{mode}_{rep}.json"
    log = workdir / f"dbos_{mode}_{rep}.log"
    with fresh_database("bench_dbos") as url:
        args = [
            "dbos",
            "--url",
            url,
            "--n",
            str(sizes.workflows),
            "--mode",
            mode,
            "--concurrency",
            str(sizes.concurrency),
            "--out",
            str(out),
            "--deadline",
            str(sizes.child_deadline),
        ]
        with child_process("bench.workflows", args, log) as proc:
            finish_child(proc, timeout=sizes.child_deadline + 30, log_path=log)
        _verify_dbos(url, sizes.workflows)
    try:
        data: Metric = json.loads(out.read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"DBOS child wrote no result: {exc}\n{log_tail(log)}") from exc
    return {**data, "verified": True}


def _run_dbos(sizes: Sizes, workdir: Path) -> dict[str, Metric]:
    check_postgres()
    # A slow peer: one run of each, like Procrastinate and Celery (``sizes.peer_repeats``).
    reps = range(sizes.peer_repeats)
    direct = [_dbos_once("direct", sizes, workdir, rep) for rep in reps]
    queue = [_dbos_once("queue", sizes, workdir, rep) for rep in reps]
    return {"workflow_runs": best_of(direct), "workflow_runs_queue": best_of(queue)}


def run_workflows(system: str, sizes: Sizes, workdir: Path) -> dict[str, Metric]:
    """Every workflow measurement of one system (``wf-sqlite``, ``wf-postgres``, ``dbos``)."""
    if system == "dbos":
        return _run_dbos(sizes, workdir)
    if system in ("wf-sqlite", "wf-postgres"):
        return _run_dispatch(system, sizes, workdir)
    raise ValueError(f"unknown workflow system {system!r}")


# -- the DBOS child process ------------------------------------------------------------------------


def _dbos_main(args: argparse.Namespace) -> int:
    from dbos import DBOS, DBOSConfig

    from bench import dbos_app

    # Never outlive a parent that forgot us.
    timer = threading.Timer(args.deadline, os._exit, (3,))
    timer.daemon = True
    timer.start()
    config: DBOSConfig = {
        "name": "dispatch-bench",
        "system_database_url": args.url,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    n: int = args.n
    try:
        queue = None
        if args.mode == "queue":
            queue = DBOS.register_queue(
                "bench", worker_concurrency=args.concurrency, polling_interval_sec=DBOS_QUEUE_POLL_S
            )

        async def measure() -> tuple[list[int], float, float]:
            t0 = time.perf_counter()
            if queue is None:
                handles = [await DBOS.start_workflow_async(dbos_app.ten_steps, i) for i in range(n)]
            else:
                handles = [await queue.enqueue_async(dbos_app.ten_steps, i) for i in range(n)]
            started = time.perf_counter()
            results = [await h.get_result() for h in handles]
            return results, started - t0, time.perf_counter() - t0

        results, start_s, total_s = asyncio.run(measure())
    finally:
        DBOS.destroy()
    if results != [expected_output(i) for i in range(n)]:
        print("DBOS returned wrong workflow outputs", flush=True)
        return 1
    extra: dict[str, Any] = {
        "steps": STEPS,
        "start_s": round(start_s, 6),
        "start_rate": round(n / start_s, 1),
        "steps_per_s": round(n * STEPS / total_s, 1),
    }
    if queue is not None:
        extra.update(concurrency=args.concurrency, polling_interval_s=DBOS_QUEUE_POLL_S)
        extra["note"] = "Queue.enqueue_async, worker_concurrency"
    else:
        extra["note"] = "DBOS.start_workflow_async, no concurrency limit"
    Path(args.out).write_text(json.dumps(rate_metric(n, total_s, **extra)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workflows")
    sub = parser.add_subparsers(dest="command", required=True)
    dbos = sub.add_parser("dbos", help="run the DBOS Transact workflows and time them")
    dbos.add_argument("--url", required=True)
    dbos.add_argument("--n", type=int, required=True)
    dbos.add_argument("--mode", choices=("direct", "queue"), required=True)
    dbos.add_argument("--concurrency", type=int, default=10)
    dbos.add_argument("--out", required=True)
    dbos.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args(argv)
    return _dbos_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
