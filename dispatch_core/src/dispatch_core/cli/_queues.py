"""``dispatch queues …``: list queues with their load and limits; pause, resume, set limits."""

from __future__ import annotations

import attrs
import click

from dispatch_core.cli._common import (
    resolve_engine,
    resolve_operations,
    run_with,
    run_with_engine,
    store_options,
)
from dispatch_core.cli._format import Column, echo_json, echo_table, to_jsonable
from dispatch_core.engine import Engine
from dispatch_core.queues import QueueConfig, QueueStats

__all__ = ["describe_limits", "queues"]

_QUEUE_COLUMNS = (
    Column("name", max_width=28, shrink=1, min_width=10),
    Column("paused"),
    Column("depth", align="right"),
    Column("running", align="right"),
    Column("completed/min", align="right"),
    Column("concurrency"),
    Column("rate"),
)


def _per(config: QueueConfig) -> str:
    return " per tenant" if config.per_tenant else ""


def _concurrency_cell(config: QueueConfig | None) -> str:
    """``5``, ``5 per tenant`` or ``-``."""
    if config is None or config.concurrency is None:
        return "-"
    return f"{config.concurrency}{_per(config)}"


def _rate_cell(config: QueueConfig | None) -> str:
    """``10/s burst 20``, ``0.5/s burst 1 per tenant`` or ``-``."""
    if config is None or config.rate is None:
        return "-"
    return f"{config.rate:g}/s burst {config.bucket_size}{_per(config)}"


def describe_limits(config: QueueConfig) -> str:
    """``concurrency 5, rate 10/s burst 20, per tenant``, or ``no limits``."""
    parts = []
    if config.concurrency is not None:
        parts.append(f"concurrency {config.concurrency}")
    if config.rate is not None:
        parts.append(f"rate {config.rate:g}/s burst {config.bucket_size}")
    if not parts:
        return "no limits"
    if config.per_tenant:
        parts.append("per tenant")
    return ", ".join(parts)


def _queue_row(stats: QueueStats) -> list[str]:
    """The table cells of one queue."""
    return [
        stats.name,
        "yes" if stats.paused else "no",
        str(stats.depth),
        str(stats.running),
        str(stats.completed_last_minute),
        _concurrency_cell(stats.config),
        _rate_cell(stats.config),
    ]


def _list_queues(as_json: bool, app: str | None, url: str | None) -> None:
    """Print the queues as a table or JSON."""
    found = run_with(resolve_operations(app, url), lambda ops: ops.aqueues())
    if as_json:
        echo_json([to_jsonable(q) for q in found])
    elif not found:
        click.echo("No queues: no job was enqueued and no queue has limits or a pause.")
    else:
        echo_table(_QUEUE_COLUMNS, [_queue_row(q) for q in found])


def _store_args(app: str | None, url: str | None) -> tuple[str | None, str | None]:
    """``--app`` / ``--url`` of a subcommand, else those given to ``dispatch queues`` itself
    (``dispatch queues --url X pause Q`` works too)."""
    if app or url:
        return app, url
    parent = click.get_current_context().parent
    params = parent.params if parent is not None else {}
    return params.get("app"), params.get("url")


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of queues.")
@store_options
@click.pass_context
def queues(ctx: click.Context, as_json: bool, app: str | None, url: str | None) -> None:
    """List queues (the default), pause and resume them, set their limits.

    Limits and pauses live in the store and hold across every worker that shares it, at
    once. Without a subcommand, lists the queues as 'dispatch queues ls' does.
    """
    if ctx.invoked_subcommand is None:
        _list_queues(as_json, app, url)


@queues.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of queues.")
@store_options
def queues_ls(as_json: bool, app: str | None, url: str | None) -> None:
    """List every queue that has jobs or settings, by name.

    The table shows whether the queue is paused, its depth (pending and retrying jobs,
    scheduled ones included), its running jobs, the jobs it completed in the last minute,
    its concurrency cap and its rate limit (jobs started per second, and the burst allowed
    after a quiet spell); "per tenant" marks limits that apply to each tenant separately.
    """
    parent = click.get_current_context().parent
    as_json = as_json or bool(parent is not None and parent.params.get("as_json"))
    _list_queues(as_json, *_store_args(app, url))


@queues.command("pause")
@click.argument("name")
@store_options
def queues_pause(name: str, app: str | None, url: str | None) -> None:
    """Pause queue NAME: no worker claims its jobs until it is resumed.

    Running jobs finish; waiting ones stay in the queue.
    """
    run_with(resolve_operations(*_store_args(app, url)), lambda ops: ops.apause_queue(name))
    click.echo(f"Paused queue {name!r}; resume it with: dispatch queues resume {name}")


@queues.command("resume")
@click.argument("name")
@store_options
def queues_resume(name: str, app: str | None, url: str | None) -> None:
    """Resume paused queue NAME: workers claim its jobs again."""
    run_with(resolve_operations(*_store_args(app, url)), lambda ops: ops.aresume_queue(name))
    click.echo(f"Resumed queue {name!r}.")


async def _apply_limits(
    engine: Engine, given: QueueConfig, keep: bool, fields: set[str]
) -> QueueConfig:
    """Set ``fields`` of ``given`` over the queue's current limits (or none, without
    ``keep``); return what was stored."""
    base = QueueConfig(name=given.name)
    if keep:
        current = {q.name: q.config for q in await engine.aqueues()}.get(given.name)
        base = current or base
    config = attrs.evolve(base, **{f: getattr(given, f) for f in fields})
    await engine.aset_queue(config)
    return config


@queues.command("set")
@click.argument("name")
@click.option(
    "--concurrency", type=int, metavar="N", help="Most jobs of the queue running at once."
)
@click.option("--rate", type=float, metavar="R", help="Most jobs started per second, on average.")
@click.option(
    "--burst", type=int, metavar="B", help="Jobs that may start at once after a quiet spell."
)
@click.option(
    "--per-tenant/--no-per-tenant",
    default=None,
    help="Apply the limits to each tenant separately / to the queue as a whole.",
)
@click.option("--reset", is_flag=True, help="Start from no limits instead of the current ones.")
@store_options
def queues_set(
    name: str,
    concurrency: int | None,
    rate: float | None,
    burst: int | None,
    per_tenant: bool | None,
    reset: bool,
    app: str | None,
    url: str | None,
) -> None:
    """Set the limits of queue NAME, cluster-wide, at once.

    Options not given keep their current values; with --reset, they are cleared (so
    'dispatch queues set Q --reset' removes every limit and '--reset --rate 5' keeps only
    a rate). Limits declared in code with engine.queue(...) are written again by each
    worker when it starts. Works on the store only, not through an admin API URL.

    \b
    Examples:
      dispatch queues set emails --concurrency 5
      dispatch queues set api --rate 10 --burst 20 --per-tenant
    """
    values = {"concurrency": concurrency, "rate": rate, "burst": burst, "per_tenant": per_tenant}
    fields = {k for k, v in values.items() if v is not None}
    if not fields and not reset:
        raise click.UsageError(
            "give at least one of --concurrency, --rate, --burst, --per-tenant/--no-per-tenant "
            "or --reset"
        )
    # Refuse bad values (a one-line ConfigurationError naming the field) before the store opens.
    given = QueueConfig(
        name=name,
        concurrency=concurrency,
        rate=rate,
        burst=burst,
        per_tenant=bool(per_tenant),
    )
    engine = resolve_engine(*_store_args(app, url))
    config = run_with_engine(engine, lambda e: _apply_limits(e, given, not reset, fields))
    click.echo(f"Queue {name!r}: {describe_limits(config)}.")
