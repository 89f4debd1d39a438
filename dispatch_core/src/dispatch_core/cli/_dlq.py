"""``dispatch dlq …``: inspect, replay and purge the dead-letter queue."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta

import attrs
import click

from dispatch_core.cli._common import (
    CLIError,
    one_line,
    plural,
    resolve_operations,
    run_with,
    store_options,
)
from dispatch_core.cli._format import (
    DATETIME,
    DURATION,
    Column,
    echo_json,
    echo_record,
    echo_table,
    first_line,
    format_duration,
    format_time,
    relative_time,
    to_jsonable,
)
from dispatch_core.cli._paging import LIST_PREVIEW, echo_next_page, list_preview, page_options
from dispatch_core.errors import DispatchError
from dispatch_core.models import DLQEntry, SortOrder, utcnow
from dispatch_core.operations import Operations

__all__ = ["dlq"]

#: Replays of more entries than this show a progress bar instead of one line each
#: (the ``dlq replay`` help text says 5).
PROGRESS_THRESHOLD = 5
#: Entries read per call when walking the queue for ``replay --all``.
_PAGE = 500
#: Entries deleted per call by ``purge`` (its ``--batch-size`` default): short store
#: transactions, and progress to show.
PURGE_BATCH = 1000

_DLQ_COLUMNS = (
    Column("id"),
    Column("name", max_width=28, shrink=2, min_width=12, elide="left"),
    Column("queue", max_width=14, shrink=3, min_width=7),
    Column("tries", align="right"),
    Column("failed"),
    Column("replayed"),
    Column("error", shrink=1, min_width=16),
)


@click.group()
def dlq() -> None:
    """Inspect, replay and purge dead-lettered jobs.

    A job lands in the dead-letter queue when its every attempt failed.
    """


def _dlq_row(entry: DLQEntry, now: datetime) -> list[str]:
    """The table cells of one dead-letter entry."""
    return [
        entry.id,
        entry.name,
        entry.queue,
        f"{entry.attempts}/{entry.max_attempts}",
        relative_time(entry.failed_at, now),
        relative_time(entry.replayed_at, now),
        first_line(entry.error) or "-",
    ]


@dlq.command("ls")
@click.option("-q", "--queue", help="Only entries of this queue.")
@click.option("--name", help="Only entries of this job name.")
@page_options("entries", default_order=SortOrder.ASC)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help=f"Print a JSON array of entries (a payload over {LIST_PREVIEW} bytes as a preview: "
    "'dlq show ID --json' prints it whole).",
)
@store_options
def dlq_ls(
    queue: str | None,
    name: str | None,
    limit: int,
    after: str | None,
    order: str,
    as_json: bool,
    app: str | None,
    url: str | None,
) -> None:
    """List dead-letter entries, oldest failure first.

    A full page ends with the --after value of the next one.
    """
    entries = run_with(
        resolve_operations(app, url),
        lambda ops: ops.alist_dlq(
            queue=queue,
            name=name,
            limit=limit,
            after=after,
            order=order.lower(),
            preview=list_preview(as_json),
        ),
    )
    if as_json:
        echo_json([to_jsonable(x) for x in entries])
        return
    if not entries:
        click.echo("The dead-letter queue is empty.")
        return
    now = utcnow()
    echo_table(_DLQ_COLUMNS, [_dlq_row(x, now) for x in entries])
    echo_next_page([x.id for x in entries], limit)


@dlq.command("show")
@click.argument("entry_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the entry as a JSON object.")
@store_options
def dlq_show(entry_id: str, as_json: bool, app: str | None, url: str | None) -> None:
    """Show every field of dead-letter entry ID, including the full error."""
    entry = run_with(resolve_operations(app, url), lambda ops: ops.aget_dlq(entry_id))
    if as_json:
        echo_json(to_jsonable(entry))
    else:
        echo_record(entry, long_fields=("error",))


# -- replay ---------------------------------------------------------------------------------------


@attrs.define
class _ReplayReport:
    """What a replay did: the entries replayed and the errors met."""

    replayed: list[tuple[str, str]] = attrs.Factory(list)  # (entry id, new job id)
    errors: list[str] = attrs.Factory(list)


async def _unreplayed_ids(ops: Operations, queue: str | None) -> list[str]:
    """Ids of every entry not yet replayed, page by page (by keyset), oldest first."""
    ids: list[str] = []
    after: str | None = None
    while True:
        # only the ids are needed: preview=0 leaves every payload where it is
        page = await ops.alist_dlq(
            queue=queue, replayed=False, limit=_PAGE, after=after, order=SortOrder.ASC, preview=0
        )
        ids.extend(x.id for x in page)
        if len(page) < _PAGE:
            return ids
        after = page[-1].id


async def _replay_one(ops: Operations, entry_id: str, report: _ReplayReport) -> None:
    """Replay one entry, recording the new job or the error."""
    try:
        job = await ops.areplay_dlq(entry_id)
    except DispatchError as exc:
        report.errors.append(one_line(str(exc)))
    else:
        report.replayed.append((entry_id, job.id))


async def _replay(
    ops: Operations, ids: list[str], everything: bool, queue: str | None
) -> _ReplayReport:
    """Replay ``ids`` (or every unreplayed entry), with a progress bar for many."""
    if everything:
        ids = await _unreplayed_ids(ops, queue)
    report = _ReplayReport()
    if len(ids) <= PROGRESS_THRESHOLD:
        for entry_id in ids:
            await _replay_one(ops, entry_id, report)
        return report
    with click.progressbar(
        length=len(ids), label="Replaying dead-letter entries", file=sys.stderr
    ) as bar:
        for entry_id in ids:
            await _replay_one(ops, entry_id, report)
            bar.update(1)
    return report


def _print_replay(report: _ReplayReport, verbose: bool) -> None:
    """Print the replays (one line each when ``verbose``), errors and a summary."""
    if verbose:
        for entry_id, job_id in report.replayed:
            click.echo(f"Replayed {entry_id} as {job_id}.")
    for message in report.errors:
        click.echo(f"Error: {message}", err=True)
    click.echo(f"Replayed {plural(len(report.replayed), 'entry', 'entries')}.")


@dlq.command("replay")
@click.argument("entry_ids", metavar="[ID]...", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Replay every entry not yet replayed.")
@click.option("-q", "--queue", help="With --all: only entries of this queue.")
@store_options
def dlq_replay(
    entry_ids: tuple[str, ...],
    everything: bool,
    queue: str | None,
    app: str | None,
    url: str | None,
) -> None:
    """Replay dead-letter entries as fresh jobs.

    Each entry ID, or with --all every entry not yet replayed, is enqueued again as a new
    job with its attempts reset; the entry is kept, stamped with the replay. Replays of more
    than 5 entries show a progress bar. Exits with status 1 if any replay failed.
    """
    if bool(entry_ids) == everything:
        raise click.UsageError("give one or more entry IDs, or --all")
    if queue and not everything:
        raise click.UsageError("--queue only applies with --all")
    ops = resolve_operations(app, url)
    report = run_with(ops, lambda o: _replay(o, list(entry_ids), everything, queue))
    attempted = len(report.replayed) + len(report.errors)
    if everything and attempted == 0:
        click.echo("Nothing to replay: no dead-letter entry awaits a replay.")
        return
    _print_replay(report, verbose=attempted <= PROGRESS_THRESHOLD)
    if report.errors:
        raise CLIError(f"{len(report.errors)} of {attempted} replays failed")


# -- purge ----------------------------------------------------------------------------------------


def _purge_cutoff(
    older_than: timedelta | None, before: datetime | None, everything: bool
) -> tuple[datetime, str]:
    """The cutoff time and a description of what will be purged."""
    given = [x for x in (older_than, before, everything or None) if x is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --older-than DURATION, --before ISO8601, --all")
    now = utcnow()
    if older_than is not None:
        cutoff = now - older_than
        return cutoff, f"entries that failed more than {format_duration(older_than)} ago"
    if before is not None:
        return before, f"entries that failed before {format_time(before)}"
    # A day ahead, not "now": a remote server's clock may run ahead of this machine's.
    return now + timedelta(days=1), "every entry"


async def _purge(ops: Operations, cutoff: datetime, queue: str | None, batch: int) -> int:
    """Delete the entries before ``cutoff`` in batches of ``batch``, oldest first; show a
    progress bar when there are more entries than one batch."""
    # The queue's size bounds what matches; the bar completes when a batch comes back short.
    total = await ops.acount_dlq(queue=queue)
    if total <= batch:
        return await ops.apurge_dlq(before=cutoff, queue=queue, limit=batch)
    purged = 0
    with click.progressbar(
        length=total, label="Purging dead-letter entries", file=sys.stderr
    ) as bar:
        while True:
            deleted = await ops.apurge_dlq(before=cutoff, queue=queue, limit=batch)
            purged += deleted
            bar.update(deleted)
            if deleted < batch:
                bar.update(max(total - purged, 0))
                return purged


@dlq.command("purge")
@click.option(
    "--older-than",
    type=DURATION,
    help="Purge entries that failed longer ago than this: 30d, 12h, 90m, 45s, 1d12h.",
)
@click.option(
    "--before",
    type=DATETIME,
    help="Purge entries that failed before this ISO 8601 time (UTC when no offset is given).",
)
@click.option("--all", "everything", is_flag=True, help="Purge every entry.")
@click.option("-q", "--queue", help="Only entries of this queue.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=PURGE_BATCH,
    show_default=True,
    help="Entries deleted per store call (or API request).",
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@store_options
def dlq_purge(
    older_than: timedelta | None,
    before: datetime | None,
    everything: bool,
    queue: str | None,
    batch_size: int,
    yes: bool,
    app: str | None,
    url: str | None,
) -> None:
    """Delete dead-letter entries for good.

    Exactly one of --older-than, --before or --all is required. Asks for confirmation
    unless --yes is given, then deletes the entries oldest first, --batch-size at a time
    (with a progress bar when there are more than that), and prints how many were purged.

    \b
    Examples:
      dispatch dlq purge --older-than 30d
      dispatch dlq purge --before 2024-05-01T00:00:00Z --yes
      dispatch dlq purge --all --yes
    """
    cutoff, what = _purge_cutoff(older_than, before, everything)
    if queue:
        what += f" of queue {queue!r}"
    ops = resolve_operations(app, url)
    if not yes:
        question = f"Delete {what} from the dead-letter queue of {ops.safe_url}?"
        click.confirm(question, abort=True)
    purged = run_with(ops, lambda o: _purge(o, cutoff, queue, batch_size))
    click.echo(f"Purged {plural(purged, 'dead-letter entry', 'dead-letter entries')}.")
