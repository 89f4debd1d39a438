"""The Procrastinate app of the benchmark, built the same way by the producer and the worker
child process (task names are explicit, so both agree).

The connector is Procrastinate's ``PsycopgConnector`` (psycopg 3) with its defaults: a
``psycopg_pool`` pool (4 connections, each checked with a round trip when taken from the
pool). Used synchronously before ``open_async``, the app falls back to Procrastinate's own
``SyncPsycopgConnector``, which is what ``task.defer`` / ``task.batch_defer`` use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import procrastinate
from procrastinate import App, PsycopgConnector

from bench.latency import Recorder

__all__ = ["ProcrastinateTasks", "make_app", "TABLES"]

#: The tables a run fills; truncated between measurements so each starts on an empty queue.
TABLES = (
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_jobs",
    "procrastinate_workers",
)


@dataclass
class ProcrastinateTasks:
    """The tasks registered on a benchmark app."""

    app: App
    noop: procrastinate.tasks.Task[..., Any, ...]
    stamp: procrastinate.tasks.Task[..., Any, ...]


def make_app(conninfo: str, recorder: Recorder | None = None) -> ProcrastinateTasks:
    """An app on ``conninfo`` (not opened) with the benchmark's tasks."""
    app = App(connector=PsycopgConnector(conninfo=conninfo))

    @app.task(name="bench.noop")
    async def noop(user_id: int, note: str) -> None:
        return None

    @app.task(name="bench.stamp")
    async def stamp(enqueued_ns: int, warmup: bool) -> None:
        if recorder is not None:
            recorder.stamp(enqueued_ns, warmup)

    return ProcrastinateTasks(app=app, noop=noop, stamp=stamp)
