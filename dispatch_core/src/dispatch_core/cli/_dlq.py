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
    redact_url,
    resolve_engine,
    run_with_engine,
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
from dispatch_core.engine import Engine
from dispatch_core.errors import DispatchError
from dispatch_core.models import DLQEntry, utcnow

__all__ = ["dlq"]

#: Replays of more entries than this show a progress bar instead of one line each
#: (the ``dlq replay`` help text says 5).
PROGRESS_THRESHOLD = 5
_PAGE = 500

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
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Most entries shown."
)
@click.option(
    "--offset", type=click.IntRange(min=0), default=0, show_default=True, help="Entries skipped."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of full entries.")
@store_options
def dlq_ls(
    queue: str | None, limit: int, offset: int, as_json: bool, app: str | None, url: str | None
) -> None:
    """List dead-letter entries, oldest failure first."""
    entries = run_with_engine(
        resolve_engine(app, url),
        lambda e: e.alist_dlq(queue=queue, limit=limit, offset=offset),
    )
    if as_json:
        echo_json([to_jsonable(x) for x in entries])
        return
    if not entries:
        click.echo("The dead-letter queue is empty.")
        return
    now = utcnow()
    echo_table(_DLQ_COLUMNS, [_dlq_row(x, now) for x in entries])
    if len(entries) == limit:
        click.echo(f"(first {limit} shown; use --limit and --offset for more)", err=True)


@dlq.command("show")
@click.argument("entry_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the entry as a JSON object.")
@store_options
def dlq_show(entry_id: str, as_json: bool, app: str | None, url: str | None) -> None:
    """Show every field of dead-letter entry ID, including the full error."""
    entry = run_with_engine(resolve_engine(app, url), lambda e: e.aget_dlq(entry_id))
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


async def _unreplayed_ids(engine: Engine, queue: str | None) -> list[str]:
    """Ids of every entry not yet replayed, page by page, oldest first."""
    ids: list[str] = []
    offset = 0
    while True:
        page = await engine.alist_dlq(queue=queue, limit=_PAGE, offset=offset)
        ids.extend(x.id for x in page if x.replayed_at is None)
        if len(page) < _PAGE:
            return ids
        offset += _PAGE


async def _replay_one(engine: Engine, entry_id: str, report: _ReplayReport) -> None:
    """Replay one entry, recording the new job or the error."""
    try:
        job = await engine.areplay_dlq(entry_id)
    except DispatchError as exc:
        report.errors.append(one_line(str(exc)))
    else:
        report.replayed.append((entry_id, job.id))


async def _replay(
    engine: Engine, ids: list[str], everything: bool, queue: str | None
) -> _ReplayReport:
    """Replay ``ids`` (or every unreplayed entry), with a progress bar for many."""
    if everything:
        ids = await _unreplayed_ids(engine, queue)
    report = _ReplayReport()
    if len(ids) <= PROGRESS_THRESHOLD:
        for entry_id in ids:
            await _replay_one(engine, entry_id, report)
        return report
    with click.progressbar(
        length=len(ids), label="Replaying dead-letter entries", file=sys.stderr
    ) as bar:
        for entry_id in ids:
            await _replay_one(engine, entry_id, report)
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
    engine = resolve_engine(app, url)
    report = run_with_engine(engine, lambda e: _replay(e, list(entry_ids), everything, queue))
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
    return now + timedelta(seconds=1), "every entry"


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
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@store_options
def dlq_purge(
    older_than: timedelta | None,
    before: datetime | None,
    everything: bool,
    yes: bool,
    app: str | None,
    url: str | None,
) -> None:
    """Delete dead-letter entries for good.

    Exactly one of --older-than, --before or --all is required. Asks for confirmation
    unless --yes is given, then prints how many entries were purged.

    \b
    Examples:
      dispatch dlq purge --older-than 30d
      dispatch dlq purge --before 2024-05-01T00:00:00Z --yes
      dispatch dlq purge --all --yes
    """
    cutoff, what = _purge_cutoff(older_than, before, everything)
    engine = resolve_engine(app, url)
    if not yes:
        question = f"Delete {what} from the dead-letter queue of {redact_url(engine.url)}?"
        click.confirm(question, abort=True)
    purged = run_with_engine(engine, lambda e: e.apurge_dlq(before=cutoff))
    click.echo(f"Purged {plural(purged, 'dead-letter entry', 'dead-letter entries')}.")
