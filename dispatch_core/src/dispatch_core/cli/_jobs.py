"""``dispatch jobs …``: list, show, cancel, retry and count jobs."""

from __future__ import annotations

from datetime import datetime

import click

from dispatch_core.cli._common import plural, resolve_operations, run_with, store_options
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
from dispatch_core.models import Job, RunnableCount, SortOrder, utcnow
from dispatch_core.operations import Operations
from dispatch_core.states import JobState

__all__ = ["jobs"]

STATES = [s.value for s in JobState]

_JOB_COLUMNS = (
    Column("id"),
    Column("name", max_width=28, shrink=2, min_width=12, elide="left"),
    Column("queue", max_width=14, shrink=3, min_width=7),
    Column("state"),
    Column("tries", align="right"),
    Column("run at"),
    Column("last error", shrink=1, min_width=16),
)


@click.group()
def jobs() -> None:
    """Inspect and control jobs: list, show, cancel, retry, count."""


def _job_row(job: Job, now: datetime) -> list[str]:
    """The table cells of one job."""
    return [
        job.id,
        job.name,
        job.queue,
        job.state.value,
        f"{job.attempt}/{job.max_attempts}",
        relative_time(job.run_at, now),
        first_line(job.last_error) or "-",
    ]


@jobs.command("ls")
@click.option(
    "--state",
    type=click.Choice(STATES, case_sensitive=False),
    help="Only jobs in this state.",
)
@click.option("-q", "--queue", help="Only jobs of this queue.")
@click.option("--name", help="Only jobs with this job name.")
@click.option("--tenant", help="Only jobs of this tenant.")
@page_options("jobs", default_order=SortOrder.DESC)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help=f"Print a JSON array of job records (a payload or result over {LIST_PREVIEW} bytes "
    "as a preview: 'jobs show ID --json' prints it whole).",
)
@store_options
def jobs_ls(
    state: str | None,
    queue: str | None,
    name: str | None,
    tenant: str | None,
    limit: int,
    after: str | None,
    order: str,
    as_json: bool,
    app: str | None,
    url: str | None,
) -> None:
    """List jobs, newest first.

    The table shows id, job name, queue, state, attempts made / allowed, when the job
    runs (or ran) and the first line of its last error. A full page ends with the --after
    value of the next one.
    """

    async def fetch(ops: Operations) -> list[Job]:
        return await ops.alist_jobs(
            state=state.lower() if state else None,
            queue=queue,
            name=name,
            tenant=tenant,
            limit=limit,
            after=after,
            order=order.lower(),
            preview=list_preview(as_json),
        )

    found = run_with(resolve_operations(app, url), fetch)
    if as_json:
        echo_json([to_jsonable(j) for j in found])
        return
    if not found:
        click.echo("No jobs found.")
        return
    now = utcnow()
    echo_table(_JOB_COLUMNS, [_job_row(j, now) for j in found])
    echo_next_page([j.id for j in found], limit)


@jobs.command("show")
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the job as a JSON object.")
@store_options
def jobs_show(job_id: str, as_json: bool, app: str | None, url: str | None) -> None:
    """Show every field of job ID, including its payload, result and full last error."""
    job = run_with(resolve_operations(app, url), lambda e: e.aget_job(job_id))
    if as_json:
        echo_json(to_jsonable(job))
    else:
        echo_record(job, long_fields=("last_error",))


@jobs.command("cancel")
@click.argument("job_id", metavar="ID")
@store_options
def jobs_cancel(job_id: str, app: str | None, url: str | None) -> None:
    """Cancel job ID if it is pending, retrying or running.

    A running attempt is stopped at its worker's next heartbeat and its result discarded.
    A finished job cannot be cancelled.
    """
    job = run_with(resolve_operations(app, url), lambda e: e.acancel(job_id))
    click.echo(f"Cancelled {job.id} ({job.name}).")


@jobs.command("retry")
@click.argument("job_id", metavar="ID")
@store_options
def jobs_retry(job_id: str, app: str | None, url: str | None) -> None:
    """Send failed or cancelled job ID back to pending, with its attempts reset."""
    job = run_with(resolve_operations(app, url), lambda e: e.aretry(job_id))
    tries = plural(job.max_attempts, "attempt")
    click.echo(f"Job {job.id} ({job.name}) is {job.state.value} again, with {tries}.")


_UNHANDLED_COLUMNS = (
    Column("queue", max_width=20, shrink=2, min_width=7),
    Column("name", shrink=1, min_width=12, elide="left"),
    Column("count", align="right"),
)
_UNHANDLED_HINT = (
    "A worker claims only the job names its app registers: run one whose app imports the\n"
    "module defining each job, or, for an old or __main__.* name, list it in the job's\n"
    "aliases=[...] (or cancel those jobs and enqueue them again)."
)


@jobs.command("counts")
@click.option("-q", "--queue", help="Only count jobs of this queue.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print a JSON object: the count of each state, and "unhandled": a list of '
    "{queue, name, count}.",
)
@store_options
def jobs_counts(queue: str | None, as_json: bool, app: str | None, url: str | None) -> None:
    """Count jobs in each state, then list runnable jobs that no running worker takes.

    A job is unhandled when no running worker both takes its queue and registers its name
    (e.g. a job enqueued under a name no worker imports); it would wait forever.
    """

    async def fetch(ops: Operations) -> tuple[dict[JobState, int], list[RunnableCount]]:
        counts = await ops.acount_jobs(queue=queue)
        unhandled = await ops.aunhandled_jobs()
        return counts, [r for r in unhandled if queue is None or r.queue == queue]

    counts, unhandled = run_with(resolve_operations(app, url), fetch)
    by_state = {s.value: counts.get(s, 0) for s in JobState}
    if as_json:
        echo_json({**by_state, "unhandled": [to_jsonable(r) for r in unhandled]})
        return
    rows = [[state, str(n)] for state, n in by_state.items()]
    rows.append(["total", str(sum(by_state.values()))])
    echo_table((Column("state"), Column("count", align="right")), rows)
    if unhandled:
        click.echo()
        click.echo("Runnable, but no running worker takes them:")
        echo_table(_UNHANDLED_COLUMNS, [[r.queue, r.name, str(r.count)] for r in unhandled])
        click.echo(_UNHANDLED_HINT)
