"""``dispatch cron …``: list, show, trigger, enable, disable and remove cron entries."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from dispatch_core.cli._common import (
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
    format_time,
    relative_time,
    to_jsonable,
)
from dispatch_core.cron import CronEntry, MisfirePolicy
from dispatch_core.engine import Engine
from dispatch_core.errors import CronNotFoundError
from dispatch_core.models import utcnow

__all__ = ["cron"]

_CRON_COLUMNS = (
    # The name is what the other commands take: it gives up width last.
    Column("name", max_width=32, shrink=3, min_width=12),
    Column("schedule", max_width=32, shrink=2, min_width=12),
    Column("job", max_width=28, shrink=1, min_width=12, elide="left"),
    Column("next run (utc)"),
    Column("last run"),
    Column("misfire"),
)


@click.group()
def cron() -> None:
    """Inspect and control cron entries: list, show, trigger, enable, disable, remove.

    Entries are declared in code (@engine.cron, engine.schedule) and written to the store by
    each worker when it starts; the leader enqueues their jobs at each tick. Enabling and
    disabling persist in the store, across restarts.
    """


def _tick_format(entries: list[CronEntry]) -> str:
    """Minutes suffice unless some entry ticks on a second other than 0 (six fields)."""
    if any(e.next_run_at.second or e.next_run_at.microsecond for e in entries):
        return "%Y-%m-%d %H:%M:%S"
    return "%Y-%m-%d %H:%M"


def _next_run(entry: CronEntry, now: datetime, fmt: str) -> str:
    """``2024-05-01 12:00 (in 5m)`` in UTC, or ``disabled`` (the stored next tick of a
    disabled entry is stale: it is recomputed when the entry is enabled)."""
    if not entry.enabled:
        return "disabled"
    at = entry.next_run_at.astimezone(UTC).strftime(fmt)
    return f"{at} ({relative_time(entry.next_run_at, now)})"


def _misfire(entry: CronEntry) -> str:
    """``once``, or ``skip 60s`` with the grace a late tick gets."""
    if entry.misfire is MisfirePolicy.SKIP:
        return f"skip {entry.misfire_grace:g}s"
    return entry.misfire.value


def _cron_row(entry: CronEntry, now: datetime, fmt: str) -> list[str]:
    """The table cells of one entry."""
    return [
        entry.name,
        f"{entry.expr} {entry.timezone}",
        entry.job_name,
        _next_run(entry, now, fmt),
        relative_time(entry.last_run_at, now),
        _misfire(entry),
    ]


@cron.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of full entries.")
@store_options
def cron_ls(as_json: bool, app: str | None, url: str | None) -> None:
    """List cron entries by name.

    The table shows each entry's name, schedule and timezone, the job it enqueues, its next
    run (in UTC, and how soon; "disabled" for a disabled entry), its last run and its misfire
    policy (once: fire once after downtime; skip: drop ticks later than the grace shown).
    """
    entries = run_with(resolve_operations(app, url), lambda ops: ops.acron_entries())
    if as_json:
        echo_json([to_jsonable(x) for x in entries])
        return
    if not entries:
        click.echo("No cron entries. (Workers write the entries declared in code when they start.)")
        return
    now, fmt = utcnow(), _tick_format(entries)
    echo_table(_CRON_COLUMNS, [_cron_row(x, now, fmt) for x in entries])


@cron.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the entry as a JSON object.")
@store_options
def cron_show(name: str, as_json: bool, app: str | None, url: str | None) -> None:
    """Show every field of cron entry NAME, including its payload."""
    entry = run_with(resolve_operations(app, url), lambda ops: ops.aget_cron(name))
    if as_json:
        echo_json(to_jsonable(entry))
    else:
        echo_record(entry)


@cron.command("trigger")
@click.argument("name")
@store_options
def cron_trigger(name: str, app: str | None, url: str | None) -> None:
    """Enqueue the job of cron entry NAME now, outside its schedule.

    Its next ticks are unchanged. Prints the id of the new job.
    """
    job = run_with(resolve_operations(app, url), lambda ops: ops.atrigger_cron(name))
    click.echo(f"Triggered cron entry {name!r}: enqueued job {job.id} ({job.name}).")


@cron.command("enable")
@click.argument("name")
@store_options
def cron_enable(name: str, app: str | None, url: str | None) -> None:
    """Enable cron entry NAME; it next fires at its first tick from now.

    Ticks that passed while it was disabled are not fired.
    """
    entry = run_with(resolve_operations(app, url), lambda ops: ops.aenable_cron(name))
    when = f"{format_time(entry.next_run_at)} ({relative_time(entry.next_run_at, utcnow())})"
    click.echo(f"Enabled cron entry {name!r}; next run {when}.")


@cron.command("disable")
@click.argument("name")
@store_options
def cron_disable(name: str, app: str | None, url: str | None) -> None:
    """Disable cron entry NAME: the leader stops firing it until it is enabled again.

    The flag persists: a worker that starts with the entry declared in code keeps it disabled.
    """
    run_with(resolve_operations(app, url), lambda ops: ops.adisable_cron(name))
    click.echo(f"Disabled cron entry {name!r}.")


async def _remove(engine: Engine, name: str) -> bool:
    """Delete the entry; return whether this engine declares it in code (it comes back)."""
    declared = name in engine.cron_specs
    if not await engine.aunschedule(name):
        raise CronNotFoundError(name)
    return declared


@cron.command("rm")
@click.argument("name")
@store_options
def cron_rm(name: str, app: str | None, url: str | None) -> None:
    """Delete cron entry NAME from the store.

    An entry still declared in the application's code comes back when a worker starts:
    remove it from the code too, or use 'dispatch cron disable' to keep it off. Works on the
    store only, not through an admin API URL.
    """
    declared = run_with_engine(resolve_engine(app, url), lambda e: _remove(e, name))
    click.echo(f"Removed cron entry {name!r}.")
    if declared:
        click.echo(
            f"Note: {name!r} is declared in the application's code; a worker that starts "
            "will write it back (use 'dispatch cron disable' to keep it off).",
            err=True,
        )
