"""``dispatch migrate`` and ``dispatch plugins``."""

from __future__ import annotations

import textwrap

import click

from dispatch_core._plugins import PluginInfo, list_plugins, make_plugin_manager
from dispatch_core.cli._common import (
    APP_REF,
    load_app,
    plugin_errors,
    redact_url,
    resolve_engine,
    run_with_engine,
    store_options,
)
from dispatch_core.cli._format import echo_json, terminal_width
from dispatch_core.engine import Engine

__all__ = ["migrate", "plugins"]


async def _apply_migrations(engine: Engine) -> list[str]:
    return await engine.amigrate()


@click.command()
@store_options
def migrate(app: str | None, url: str | None) -> None:
    """Apply pending schema migrations to the store.

    Prints the name of each migration applied, or that the store is up to date.
    """
    engine = resolve_engine(app, url)
    applied = run_with_engine(engine, _apply_migrations)
    for name in applied:
        click.echo(f"Applied {name}")
    if not applied:
        click.echo(f"Store {redact_url(engine.url)} is up to date.")


def _plugin_dict(info: PluginInfo) -> dict[str, object]:
    """A plugin description as JSON types."""
    return {
        "name": info.name,
        "distribution": info.distribution,
        "version": info.version,
        "hooks": info.hooks,
    }


def _echo_plugins(infos: list[PluginInfo]) -> None:
    """Print one line per plugin, then its hooks, wrapped and indented."""
    pad = max(len(i.name) for i in infos)
    width = terminal_width()
    for info in infos:
        dist = f"{info.distribution or '-'} {info.version or ''}".rstrip()
        click.echo(f"{info.name:<{pad}}  {dist}")
        hooks = ", ".join(info.hooks) or "-"
        click.echo(
            textwrap.fill(hooks, width, initial_indent="    hooks: ", subsequent_indent=" " * 11)
        )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--app", type=APP_REF, help="List the plugins of this engine (MODULE:ATTR).")
def plugins(as_json: bool, app: str | None) -> None:
    """List loaded plugins and the hooks they implement.

    Shows each plugin's name, distribution and version: with --app, the plugins of that
    engine; otherwise the built-ins and those of the dispatch_core.plugins entry points.
    """
    if app:
        pm = load_app(app).pm
    else:
        with plugin_errors():
            pm = make_plugin_manager()
    infos = list_plugins(pm)
    if as_json:
        echo_json([_plugin_dict(i) for i in infos])
    elif not infos:
        click.echo("No plugins loaded.")
    else:
        _echo_plugins(infos)
