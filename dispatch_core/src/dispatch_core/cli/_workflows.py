"""``dispatch workflows …``: list runs, show one with its timeline, cancel, replay, send an
event."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from dispatch_core.cli._common import (
    CLIError,
    resolve_engine,
    resolve_operations,
    run_with,
    run_with_engine,
    store_options,
)
from dispatch_core.cli._format import (
    Column,
    echo_json,
    echo_record,
    echo_table,
    first_line,
    relative_time,
    to_jsonable,
)
from dispatch_core.cli._paging import LIST_PREVIEW, echo_next_page, list_preview, page_options
from dispatch_core.models import SortOrder, utcnow
from dispatch_core.operations import Operations
from dispatch_core.workflows.models import RunState, StepRecord, WorkflowRun

__all__ = ["workflows"]

_RUN_COLUMNS = (
    Column("id"),
    Column("workflow", max_width=28, shrink=2, min_width=12, elide="left"),
    Column("v", align="right"),
    Column("state"),
    Column("started"),
    Column("wakes / waits for", shrink=1, min_width=10),
    Column("error", shrink=1, min_width=12),
)

_STEP_COLUMNS = (
    Column("#", align="right"),
    Column("step", max_width=32, shrink=2, min_width=10),
    Column("kind"),
    Column("state"),
    Column("tries", align="right"),
    Column("took", align="right"),
    Column("output / error", shrink=1, min_width=16),
)


@click.group()
def workflows() -> None:
    """Inspect and steer workflow runs: list, show (with the timeline), cancel, signal."""


def _waiting(run: WorkflowRun, now: datetime) -> str:
    if run.state is RunState.SLEEPING and run.wake_at is not None:
        return f"wakes {relative_time(run.wake_at, now)}"
    if run.state is RunState.WAITING:
        timeout = f", times out {relative_time(run.wake_at, now)}" if run.wake_at else ""
        return f"event {run.waiting_for!r}{timeout}"
    return "-"


def _run_row(run: WorkflowRun, now: datetime) -> list[str]:
    return [
        run.id,
        run.name,
        str(run.version),
        run.state.value,
        relative_time(run.created_at, now),
        _waiting(run, now),
        first_line(run.error) or "-",
    ]


def _step_row(step: StepRecord) -> list[str]:
    took = "-"
    if step.finished_at is not None:
        took = f"{(step.finished_at - step.started_at).total_seconds():.3f}s"
    if step.error:
        detail = first_line(step.error)
    elif step.output is None:
        detail = "-"
    else:
        detail = json.dumps(step.output)
    return [
        str(step.seq),
        step.name,
        step.kind.value,
        step.state.value,
        str(step.attempts),
        took,
        detail,
    ]


@workflows.command("ls")
@click.option(
    "--state",
    type=click.Choice([s.value for s in RunState], case_sensitive=False),
    help="Only runs in this state.",
)
@click.option("--name", help="Only runs of this workflow.")
@click.option("--tenant", help="Only runs of this tenant.")
@page_options("runs", default_order=SortOrder.DESC)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help=f"Print a JSON array of run records (an input or output over {LIST_PREVIEW} bytes as "
    "a preview: 'workflows show RUN_ID --json' prints it whole).",
)
@store_options
def workflows_ls(
    state: str | None,
    name: str | None,
    tenant: str | None,
    limit: int,
    after: str | None,
    order: str,
    as_json: bool,
    app: str | None,
    url: str | None,
) -> None:
    """List workflow runs, newest first, with what a parked run waits for.

    A full page ends with the --after value of the next one.
    """

    async def fetch(ops: Operations) -> list[WorkflowRun]:
        return await ops.alist_runs(
            state=state.lower() if state else None,
            name=name,
            tenant=tenant,
            limit=limit,
            after=after,
            order=order.lower(),
            preview=list_preview(as_json),
        )

    found = run_with(resolve_operations(app, url), fetch)
    if as_json:
        echo_json([to_jsonable(r) for r in found])
        return
    if not found:
        click.echo("No workflow runs found.")
        return
    now = utcnow()
    echo_table(_RUN_COLUMNS, [_run_row(r, now) for r in found])
    echo_next_page([r.id for r in found], limit)


@workflows.command("show")
@click.argument("run_id", metavar="RUN_ID")
@click.option("--json", "as_json", is_flag=True, help="Print the run and its timeline as JSON.")
@store_options
def workflows_show(run_id: str, as_json: bool, app: str | None, url: str | None) -> None:
    """Show run RUN_ID: its fields, then its timeline (steps, sleeps, waits, compensations)."""

    async def fetch(ops: Operations) -> tuple[WorkflowRun, list[StepRecord]]:
        return await ops.aget_run(run_id), await ops.atimeline(run_id)

    run, timeline = run_with(resolve_operations(app, url), fetch)
    if as_json:
        echo_json({"run": to_jsonable(run), "timeline": [to_jsonable(s) for s in timeline]})
        return
    echo_record(run, long_fields=("error",))
    click.echo()
    if timeline:
        echo_table(_STEP_COLUMNS, [_step_row(s) for s in timeline])
    else:
        click.echo("No steps yet.")


@workflows.command("cancel")
@click.argument("run_id", metavar="RUN_ID")
@store_options
def workflows_cancel(run_id: str, app: str | None, url: str | None) -> None:
    """Cancel run RUN_ID: it stops at its next step and its compensations run (a worker
    running the workflow's code does that)."""
    run = run_with(resolve_operations(app, url), lambda ops: ops.acancel_run(run_id))
    click.echo(f"Cancelled {run.id} ({run.name}); its compensations run on a worker.")


@workflows.command("replay")
@click.argument("run_id", metavar="RUN_ID")
@click.option("--from", "from_step", required=True, help="The step to run again from.")
@store_options
def workflows_replay(run_id: str, from_step: str, app: str | None, url: str | None) -> None:
    """Run finished run RUN_ID again from step --from, as a new run: the steps before it keep
    their recorded results, that step and the ones after it run again (on a worker)."""
    run = run_with(resolve_operations(app, url), lambda ops: ops.areplay_run(run_id, from_step))
    click.echo(f"Replaying {run_id} from {from_step!r} as {run.id}.")


@workflows.command("signal")
@click.argument("run_id", metavar="RUN_ID")
@click.argument("event")
@click.option("--payload", default="null", show_default=True, help="The event's payload, as JSON.")
@click.option("--tenant", help="The tenant the run belongs to.")
@store_options
def workflows_signal(
    run_id: str, event: str, payload: str, tenant: str | None, app: str | None, url: str | None
) -> None:
    """Send EVENT to run RUN_ID (it wakes if it waits for it)."""
    try:
        value: Any = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise CLIError(f"--payload is not JSON: {exc}") from exc
    run_with(
        resolve_operations(app, url),
        lambda ops: ops.asend_event(event, value, run_id=run_id, tenant=tenant),
    )
    click.echo(f"Sent {event!r} to {run_id}.")


@workflows.command("migrate")
@click.argument("run_id", metavar="RUN_ID")
@click.argument("version", type=click.IntRange(min=1))
@store_options
def workflows_migrate(run_id: str, version: int, app: str | None, url: str | None) -> None:
    """Move unfinished run RUN_ID to VERSION of its workflow (registered in --app): its next
    replay runs that version's handler against the history it has.

    Works on the store only, not through an admin API URL.
    """
    run = run_with_engine(resolve_engine(app, url), lambda e: e.amigrate_run(run_id, version))
    click.echo(f"Run {run.id} ({run.name}) is now on version {run.version}.")
