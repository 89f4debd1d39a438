"""``flask dispatch …``: the core ``dispatch`` commands, run on the current app's engine.

The commands are the core's own (``dispatch_core.cli``), adapted rather than rewritten: their
``--app`` / ``--url`` options (and the worker's ``APP`` argument) are dropped, and each call
gives them :data:`ENGINE_REF`, a ``MODULE:ATTR`` reference that resolves to the engine of
``current_app``. The worker's options default to the app's ``DISPATCH_WORKER_*`` settings.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from dispatch_core import DispatchError
from dispatch_core.cli import cli as core_cli
from dispatch_flask.config import WorkerSettings

if TYPE_CHECKING:
    from dispatch_flask.extension import Dispatch

__all__ = ["ENGINE_REF", "dispatch_cli"]

#: What the core commands are given as ``--app``: see :mod:`dispatch_flask._current_engine`.
ENGINE_REF = "dispatch_flask._current_engine:engine"

#: The core commands offered under ``flask dispatch``.
COMMANDS = ("worker", "migrate", "jobs", "dlq", "cron", "workers", "queues", "plugins")

#: Worker options whose default comes from app.config: option -> (key, value from settings).
_WORKER_DEFAULTS: dict[str, tuple[str, Callable[[WorkerSettings], Any]]] = {
    "queues": ("DISPATCH_WORKER_QUEUES", lambda s: s.queues or ()),
    "concurrency": ("DISPATCH_WORKER_CONCURRENCY", lambda s: s.concurrency),
    "lease": ("DISPATCH_WORKER_LEASE_SECONDS", lambda s: s.lease_seconds),
    "grace": ("DISPATCH_WORKER_GRACE_PERIOD", lambda s: s.grace_period),
    "poll_interval": ("DISPATCH_WORKER_POLL_INTERVAL", lambda s: s.poll_interval),
    "prefetch": ("DISPATCH_WORKER_PREFETCH", lambda s: s.prefetch),
    "heartbeat": ("DISPATCH_WORKER_HEARTBEAT_INTERVAL", lambda s: s.heartbeat_interval),
    "worker_timeout": ("DISPATCH_WORKER_TIMEOUT", lambda s: s.worker_timeout),
    "no_lead": ("DISPATCH_WORKER_LEAD", lambda s: not s.lead),
}

_WORKER_HELP = """Run a worker for this app's jobs, in the foreground.

Each job runs inside app.app_context(), so current_app and flask.g work in handlers. Options
not given take their values from app.config (the DISPATCH_WORKER_* key named after each
option); the store is app.config['DISPATCH_URL'].

SIGINT or SIGTERM stops the worker gracefully: it claims no more jobs and lets running ones
finish within --grace; a second signal stops it at once (unfinished jobs go back to the
queue without using an attempt). Prints a banner at start and the job counts at exit.
"""

_GROUP_HELP = """Dispatch: run workers and inspect jobs of this app's engine.

The engine is the one dispatch_flask.Dispatch built for the app, from its DISPATCH_* config.
"""


def _settings() -> WorkerSettings:
    extension: Dispatch = current_app.extensions["dispatch"]
    return extension.get_config(current_app._get_current_object()).worker  # type: ignore[attr-defined]


def _with_config_default(param: click.Parameter, key: str) -> click.Parameter:
    """A copy of the core option whose help names the config key it defaults to."""
    clone = copy.copy(param)
    if isinstance(clone, click.Option):
        clone.show_default = False
        clone.help = f"{clone.help or ''} (config: {key})".strip()
    return clone


def _adapt(command: click.Command) -> click.Command:
    """The core ``command`` (a group: with its subcommands) run on the current app's engine."""
    names = {p.name for p in command.params}
    defaults = _WORKER_DEFAULTS if command.name == "worker" else {}
    params = [
        _with_config_default(p, defaults[p.name][0]) if p.name in defaults else p
        for p in command.params
        if p.name not in ("app", "url")
    ]
    original = command.callback

    def callback(**kwargs: Any) -> Any:
        if defaults:
            ctx = click.get_current_context()
            settings = _settings()
            for name, (_, value_of) in defaults.items():
                if ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, None):
                    kwargs[name] = value_of(settings)
        if "app" in names:
            kwargs["app"] = ENGINE_REF
        if "url" in names:
            kwargs["url"] = None
        return original(**kwargs) if original is not None else None

    callback.__name__ = command.name or "command"
    wrapped = with_appcontext(callback)
    help_text = _WORKER_HELP if command.name == "worker" else command.help
    if isinstance(command, click.Group):
        group = AppGroup(
            name=command.name,
            params=params,
            callback=wrapped,
            help=help_text,
            short_help=command.short_help,
            invoke_without_command=command.invoke_without_command,
            no_args_is_help=command.no_args_is_help,
            context_settings=command.context_settings,
        )
        for sub in command.commands.values():
            group.add_command(_adapt(sub))
        return group
    return click.Command(
        name=command.name,
        params=params,
        callback=wrapped,
        help=help_text,
        short_help=command.short_help,
        epilog=command.epilog,
        context_settings=command.context_settings,
        no_args_is_help=command.no_args_is_help,
    )


class DispatchAppGroup(AppGroup):
    """The ``flask dispatch`` group: Dispatch errors become one-line ``Error: …`` messages
    (exit status 1), as with the ``dispatch`` command, unless ``--traceback`` is given."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand, reporting a :class:`DispatchError` in one line."""
        try:
            return super().invoke(ctx)
        except DispatchError as exc:
            if ctx.params.get("traceback"):
                raise
            raise click.ClickException(" ".join(str(exc).split())) from exc


def _build() -> DispatchAppGroup:
    @click.group("dispatch", cls=DispatchAppGroup, help=_GROUP_HELP)
    @click.option("--traceback", is_flag=True, help="Show the full traceback of an error.")
    def group(traceback: bool) -> None:
        """Dispatch: run workers and inspect jobs of this app's engine."""

    assert isinstance(group, DispatchAppGroup)
    for name in COMMANDS:
        group.add_command(_adapt(core_cli.commands[name]))
    return group


#: The ``dispatch`` group that :meth:`Dispatch.init_app` adds to ``app.cli``.
dispatch_cli = _build()
