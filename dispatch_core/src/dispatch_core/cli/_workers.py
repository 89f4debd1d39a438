"""``dispatch workers``: the worker processes registered in the store, and the leader."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import click

from dispatch_core.cli._common import plural, resolve_operations, run_with, store_options
from dispatch_core.cli._format import Column, echo_json, echo_table, relative_time, to_jsonable
from dispatch_core.cluster import WorkerInfo, WorkerState
from dispatch_core.models import utcnow
from dispatch_core.operations import Operations

__all__ = ["UNRESPONSIVE_AFTER", "short_host", "worker_status", "workers"]

#: A ``running`` worker whose last heartbeat is older than this is shown as ``unresponsive``:
#: heartbeats come every 2 s by default and the leader declares a worker dead after 7 s, so a
#: row still ``running`` after 10 s means that no leader is watching, or a longer
#: ``worker_timeout``.
UNRESPONSIVE_AFTER = timedelta(seconds=10)

_WORKER_COLUMNS = (
    Column(""),  # "*" marks the leader, as git marks the current branch: narrower than a column
    # On a narrow terminal the id gives up its start (its end is the random part) before
    # the host is cut.
    Column("id", shrink=2, min_width=20, elide="left"),
    Column("host", max_width=24, shrink=3, min_width=8),
    Column("pid", align="right"),
    Column("state"),
    Column("queues", max_width=24, shrink=1, min_width=6),
    Column("conc", align="right"),
    Column("version"),
    Column("started"),
    Column("seen"),
)


def worker_status(info: WorkerInfo, now: datetime) -> str:
    """``running``, ``unresponsive``, ``stopped`` or ``dead``: the state a row shows."""
    if info.state is WorkerState.RUNNING and now - info.last_seen > UNRESPONSIVE_AFTER:
        return "unresponsive"
    return info.state.value


def short_host(hostname: str) -> str:
    """``web-1`` for ``web-1.prod.example.com`` (an IP address is kept whole)."""
    if hostname.replace(".", "").isdigit():
        return hostname
    return hostname.split(".", 1)[0] or hostname


def _worker_row(info: WorkerInfo, leader: str | None, now: datetime) -> list[str]:
    """The table cells of one worker."""
    return [
        "*" if info.id == leader else "",
        info.id,
        short_host(info.hostname),
        str(info.pid),
        worker_status(info, now),
        ",".join(info.queues) if info.queues else "*",
        str(info.concurrency),
        info.version,
        relative_time(info.started_at, now),
        relative_time(info.last_seen, now),
    ]


def _worker_json(info: WorkerInfo, leader: str | None, now: datetime) -> dict[str, Any]:
    """A worker as JSON: its row, ``leader`` as of now, and the ``status`` the table shows."""
    data = to_jsonable(info)
    data["leader"] = info.id == leader
    data["status"] = worker_status(info, now)
    return data


async def _fetch(ops: Operations) -> tuple[list[WorkerInfo], str | None]:
    return await ops.aworkers(), await ops.aleader()


def _leader_line(leader: str | None, found: list[WorkerInfo]) -> str:
    """The footer: who leads, or that nobody does."""
    if leader is None:
        return "No leader: no worker holds the leader lease (one takes it within seconds)."
    info = next((w for w in found if w.id == leader), None)
    where = f" ({info.hostname}, pid {info.pid})" if info is not None else ""
    return f"Leader (*): {leader}{where}."


@click.command()
@click.option("--all", "everything", is_flag=True, help="Include workers that stopped cleanly.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of worker records.")
@store_options
def workers(everything: bool, as_json: bool, app: str | None, url: str | None) -> None:
    """List the worker processes registered in the store, oldest first.

    The table marks the leader with * and shows each worker's id, host, pid, state, queues
    (* for every queue), concurrency, dispatch-core version, when it started and when it was
    last seen (its last heartbeat). States: running; unresponsive (still marked running, but
    silent for more than 10 s); dead (the leader saw its heartbeats stop and rescued its
    jobs); stopped (exited cleanly; shown only with --all). A last line names the leader.
    """
    found, leader = run_with(resolve_operations(app, url), _fetch)
    shown = [w for w in found if everything or w.state is not WorkerState.STOPPED]
    now = utcnow()
    if as_json:
        echo_json([_worker_json(w, leader, now) for w in shown])
        return
    hidden = len(found) - len(shown)
    if shown:
        echo_table(_WORKER_COLUMNS, [_worker_row(w, leader, now) for w in shown])
    elif hidden:
        click.echo(f"No running or dead workers ({hidden} stopped; use --all to list them).")
    else:
        click.echo("No workers registered.")
    if shown and hidden:
        click.echo(f"({plural(hidden, 'stopped worker')} hidden; use --all)", err=True)
    click.echo(_leader_line(leader, found))
