"""The ``dispatch`` command line.

``dispatch worker APP`` runs a worker; ``migrate``, ``jobs …`` and ``dlq …`` operate on a
store named by ``--app MODULE:ATTR`` or ``--url STORE_URL``, and the operator commands also on
a remote admin API (``--url https://host/dispatch``, through the ``dispatch_remote_operations``
hook); ``plugins`` lists plugins. Plugins add subcommands through the
``dispatch_register_commands`` hook (dispatch-admin adds ``serve``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
import pluggy

from dispatch_core._plugins import make_plugin_manager
from dispatch_core.cli._admin import migrate, plugins
from dispatch_core.cli._common import (
    APP_ENV,
    APP_REF,
    CLIError,
    load_app,
    one_line,
    resolve_engine,
    resolve_operations,
    run_with,
)
from dispatch_core.cli._cron import cron
from dispatch_core.cli._dlq import dlq
from dispatch_core.cli._format import color_enabled, no_color
from dispatch_core.cli._jobs import jobs
from dispatch_core.cli._queues import queues
from dispatch_core.cli._worker import LOG_LEVELS, log_level_option, logging_to_stderr, worker
from dispatch_core.cli._workers import workers
from dispatch_core.cli._workflows import workflows
from dispatch_core.errors import DispatchError

__all__ = [
    "DispatchGroup",
    "cli",
    "create_cli",
    "main",
    # For the commands plugins add (dispatch_register_commands): find the engine, fail in
    # one line.
    "APP_ENV",
    "APP_REF",
    "CLIError",
    "LOG_LEVELS",
    "color_enabled",
    "log_level_option",
    "load_app",
    "logging_to_stderr",
    "resolve_engine",
    "resolve_operations",
    "run_with",
]

_HELP = """Dispatch: durable background jobs.

\b
How commands find the engine:
  worker APP          APP is MODULE:ATTR naming an Engine, e.g. examples.demo_app:engine
                      (the current directory is importable; env: DISPATCH_APP).
  the others          --app MODULE:ATTR or --url STORE_URL; else $DISPATCH_APP, else
  (migrate, jobs,     $DISPATCH_URL, else sqlite:///dispatch.db (with dispatch-sqlite).
  dlq, workflows,     With only a URL, no jobs are registered: fine for inspection.
  workers, cron,
  queues)

\b
A remote server:
  --url http(s)://... jobs, dlq, cron, workflows, queues and workers talk to the admin API
                      mounted there (dispatch serve; pip install dispatch-admin), e.g.
                      --url https://ops.example.com/dispatch, with the bearer token in
                      $DISPATCH_TOKEN. (migrate, cron rm, queues set and workflows migrate
                      need the store itself.)

Tables fit the terminal; piped or redirected, they print every cell whole (--json gives
every field). Setting NO_COLOR (to any non-empty value) turns off bold and colour.

Errors print one line, "Error: ...", and exit with status 1 (2 for usage mistakes).
"""


class DispatchGroup(click.Group):
    """The root group: adds plugin subcommands lazily and turns Dispatch errors into
    one-line messages.

    Args:
        plugin_manager_factory: Builds the plugin manager whose
            ``dispatch_register_commands`` hook is called once, on first use.
    """

    def __init__(
        self,
        *args: Any,
        plugin_manager_factory: Callable[[], pluggy.PluginManager] = make_plugin_manager,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._plugin_manager_factory = plugin_manager_factory
        self._plugins_loaded = False

    def _load_plugin_commands(self) -> None:
        """Call ``dispatch_register_commands`` once; a failure only warns."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        try:
            pm = self._plugin_manager_factory()
            pm.hook.dispatch_register_commands(cli=self)
        except Exception as exc:
            message = one_line(f"{type(exc).__name__}: {exc}")
            click.echo(f"Warning: plugin commands not loaded: {message}", err=True)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Command names, plugin commands included."""
        self._load_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command called ``cmd_name``, plugin commands included."""
        self._load_plugin_commands()
        return super().get_command(ctx, cmd_name)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        """The root context; with ``$NO_COLOR`` set (https://no-color.org) its ``color`` is
        off, so no ``click.echo`` of any command, plugin commands included, emits styles."""
        if parent is None and no_color():
            extra.setdefault("color", False)
        return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; report Dispatch errors as ``Error: …`` (exit 1) unless
        ``--traceback`` was given."""
        show_traceback = bool(ctx.params.get("traceback"))
        try:
            return super().invoke(ctx)
        except DispatchError as exc:
            if show_traceback:
                raise
            raise CLIError(str(exc)) from exc
        except CLIError as exc:
            if show_traceback and exc.__cause__ is not None:
                raise exc.__cause__ from None
            raise


def create_cli(
    plugin_manager_factory: Callable[[], pluggy.PluginManager] = make_plugin_manager,
) -> click.Group:
    """Build the ``dispatch`` command group.

    Args:
        plugin_manager_factory: Builds the plugin manager used to collect plugin
            subcommands (default: the entry-point plugins).
    """

    @click.group(
        "dispatch",
        cls=DispatchGroup,
        plugin_manager_factory=plugin_manager_factory,
        help=_HELP,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )
    @click.version_option(package_name="dispatch-core", prog_name="dispatch")
    @click.option(
        "--traceback",
        is_flag=True,
        envvar="DISPATCH_TRACEBACK",
        help="Show the full traceback of an error instead of one line.",
    )
    def root(traceback: bool) -> None:
        """Dispatch: durable background jobs."""

    for command in (worker, migrate, jobs, dlq, workflows, workers, cron, queues, plugins):
        root.add_command(command)
    return root


cli = create_cli()


def main() -> None:
    """Entry point of the ``dispatch`` console script."""
    cli(prog_name="dispatch")
