"""Shared plumbing: finding the engine (or a remote admin API), running async calls, reporting
errors."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from types import ModuleType
from typing import Any, TypeVar

import click
import pluggy

from dispatch_core._plugins import make_plugin_manager
from dispatch_core._urls import redact_url
from dispatch_core.engine import Engine
from dispatch_core.errors import ConfigurationError, StoreURLError
from dispatch_core.operations import Operations
from dispatch_core.registry import StoreRegistry

__all__ = [
    "APP_ENV",
    "URL_ENV",
    "TOKEN_ENV",
    "APP_REF",
    "CLIError",
    "one_line",
    "plugin_errors",
    "load_app",
    "is_remote_url",
    "resolve_engine",
    "resolve_operations",
    "run_with",
    "run_with_engine",
    "store_options",
    "redact_url",
    "plural",
]

T = TypeVar("T")
FC = TypeVar("FC", bound=Callable[..., Any])

APP_ENV = "DISPATCH_APP"
URL_ENV = "DISPATCH_URL"
TOKEN_ENV = "DISPATCH_TOKEN"
_REMOTE_SCHEMES = ("http://", "https://")
_DEFAULT_ATTR = "engine"
_EXAMPLE_APP = "examples.demo_app:engine"


def one_line(text: str) -> str:
    """Collapse ``text`` onto one line (error messages are printed as a single line)."""
    return " ".join(text.split())


class CLIError(click.ClickException):
    """A failure shown as a one-line ``Error: …`` on stderr, with exit code 1."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``"1 job"``, ``"3 jobs"``: a count with its noun agreed."""
    noun = singular if count == 1 else (plural_form or singular + "s")
    return f"{count} {noun}"


@contextlib.contextmanager
def plugin_errors() -> Iterator[None]:
    """Report a plugin that fails to load (a broken entry point, an invalid hook
    implementation) as a one-line error instead of a traceback."""
    try:
        yield
    except (ImportError, pluggy.PluginValidationError) as exc:
        raise CLIError(f"loading plugins failed: {type(exc).__name__}: {exc}") from exc


# -- finding the application ---------------------------------------------------------------------


class AppRefType(click.ParamType[str]):
    """A ``MODULE:ATTR`` reference to an :class:`Engine` (``ATTR`` defaults to ``engine``)."""

    name = "MODULE:ATTR"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """Check the shape of the reference; importing happens later (errors exit 1)."""
        text = str(value).strip()
        if not _valid_app_ref(text):
            self.fail(
                f"{text!r} is not a MODULE:ATTR reference to an Engine (e.g. {_EXAMPLE_APP})",
                param,
                ctx,
            )
        return text


def _valid_app_ref(text: str) -> bool:
    """Whether ``text`` looks like ``module.path[:attr.path]``."""
    module, sep, attr = text.partition(":")
    if sep and not attr:
        return False
    dotted = [module, *([attr] if attr else [])]
    return all(part.isidentifier() for name in dotted for part in name.split("."))


APP_REF = AppRefType()


def _ensure_cwd_importable() -> None:
    """Put the current directory first on ``sys.path``, as ``flask`` and ``uvicorn`` do."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _import_module(name: str) -> ModuleType:
    """Import ``name``, turning any failure into a one-line :class:`CLIError`."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            raise CLIError(
                f"cannot import {name!r}: no module named {missing!r} "
                "(looked in the current directory and on sys.path)"
            ) from exc
        raise CLIError(f"importing {name!r} failed: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise CLIError(f"importing {name!r} failed: {type(exc).__name__}: {exc}") from exc


def _engines_in(module: ModuleType) -> list[str]:
    """Names of the module's attributes that are engines (for hints)."""
    return sorted(k for k, v in vars(module).items() if isinstance(v, Engine))


def load_app(ref: str) -> Engine:
    """Import ``MODULE:ATTR`` and return the :class:`Engine` it names.

    Raises:
        CLIError: the module cannot be imported, lacks the attribute, or it is not an Engine.
    """
    module_name, _, attr = ref.partition(":")
    attr = attr or _DEFAULT_ATTR
    _ensure_cwd_importable()
    module = _import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            found = ", ".join(_engines_in(module)) or "none"
            raise CLIError(
                f"module {module_name!r} has no attribute {attr!r} (Engine objects in it: {found})"
            )
        obj = getattr(obj, part)
    if not isinstance(obj, Engine):
        raise CLIError(
            f"{module_name}:{attr} is a {type(obj).__name__}, not a dispatch_core.Engine"
        )
    return obj


# -- finding the store ---------------------------------------------------------------------------


def store_options(f: FC) -> FC:
    """Add the ``--app`` / ``--url`` options of the store-operating commands."""
    f = click.option(
        "--url",
        metavar="URL",
        help=f"Store URL to operate on, e.g. sqlite:///dispatch.db, or the http(s) URL of a "
        f"Dispatch admin API, e.g. http://127.0.0.1:8000/dispatch, with the token in "
        f"${TOKEN_ENV} (env: {URL_ENV}).",
    )(f)
    f = click.option(
        "--app",
        type=APP_REF,
        help=f"Engine to use, as MODULE:ATTR, e.g. {_EXAMPLE_APP} (env: {APP_ENV}).",
    )(f)
    return f


def installed_schemes() -> list[str]:
    """The store URL schemes the installed plugins provide."""
    registry = StoreRegistry()
    with plugin_errors():
        pm = make_plugin_manager()
    pm.hook.dispatch_register_stores(registry=registry)
    return registry.schemes()


def resolve_engine(app: str | None, url: str | None) -> Engine:
    """The engine to operate on: ``--app``, ``--url``, ``$DISPATCH_APP``, ``$DISPATCH_URL``,
    then the engine's default store.

    Raises:
        click.UsageError: both ``--app`` and ``--url`` were given.
        CLIError: no store is configured, or the app cannot be loaded.
    """
    if app and url:
        raise click.UsageError("give --app or --url, not both")
    remote = _remote_url(app, url)
    if remote is not None:
        raise CLIError(
            f"{_command_name()} works on the store itself, not through the admin API at "
            f"{redact_url(remote)}: pass --app MODULE:ATTR or a store --url"
        )
    if app:
        return load_app(app)
    if url:
        with plugin_errors():
            return Engine(url)
    env_app = os.environ.get(APP_ENV, "").strip()
    if env_app:
        if not _valid_app_ref(env_app):
            raise CLIError(f"{APP_ENV}={env_app!r} is not MODULE:ATTR (e.g. {_EXAMPLE_APP})")
        return load_app(env_app)
    try:
        with plugin_errors():
            return Engine()  # reads DISPATCH_URL, then falls back to sqlite:///dispatch.db
    except StoreURLError:
        raise
    except ConfigurationError as exc:
        schemes = ", ".join(f"{s}://" for s in installed_schemes()) or "none"
        raise CLIError(
            f"no store given: pass --app MODULE:ATTR or --url STORE_URL, or set {APP_ENV} or "
            f"{URL_ENV} (installed schemes: {schemes}; pip install dispatch-sqlite for the "
            "sqlite:///dispatch.db default)"
        ) from exc


def is_remote_url(url: str | None) -> bool:
    """Whether ``url`` is an ``http://`` or ``https://`` address (an admin API, not a store)."""
    return bool(url) and str(url).strip().lower().startswith(_REMOTE_SCHEMES)


def _remote_url(app: str | None, url: str | None) -> str | None:
    """The admin API URL the command should talk to, if any: ``--url``, else ``$DISPATCH_URL``
    when neither ``--app`` nor ``$DISPATCH_APP`` is given."""
    if url:
        return url.strip() if is_remote_url(url) else None
    if app or os.environ.get(APP_ENV, "").strip():
        return None
    env_url = os.environ.get(URL_ENV, "").strip()
    return env_url if is_remote_url(env_url) else None


def _command_name() -> str:
    """``'dispatch cron rm'``: the running command, for messages."""
    ctx = click.get_current_context(silent=True)
    return repr(ctx.command_path) if ctx is not None else "this command"


def resolve_operations(app: str | None, url: str | None) -> Operations:
    """What an operator command works on: the engine (see :func:`resolve_engine`), or, when the
    URL is ``http(s)://``, a client of the admin API there (from the ``dispatch-admin`` plugin,
    through the ``dispatch_remote_operations`` hook) using the token in ``$DISPATCH_TOKEN``.

    Raises:
        click.UsageError: both ``--app`` and ``--url`` were given.
        CLIError: no plugin handles the URL, or the engine cannot be found.
    """
    if app and url:
        raise click.UsageError("give --app or --url, not both")
    remote = _remote_url(app, url)
    if remote is None:
        return resolve_engine(app, url)
    token = os.environ.get(TOKEN_ENV, "").strip() or None
    with plugin_errors():
        pm = make_plugin_manager()
    try:
        ops = pm.hook.dispatch_remote_operations(url=remote, token=token)
    except ValueError as exc:  # a malformed URL
        raise CLIError(str(exc)) from exc
    if ops is None:
        raise CLIError(
            f"{redact_url(remote)} is an admin API URL, and no installed plugin talks to one: "
            "pip install dispatch-admin (or pass a store URL such as sqlite:///dispatch.db)"
        )
    if not isinstance(ops, Operations):
        raise CLIError(
            f"the dispatch_remote_operations hook returned a {type(ops).__name__}, which lacks "
            "the operator methods of dispatch_core.operations.Operations"
        )
    return ops


OpsT = TypeVar("OpsT", bound=Operations)


def run_with(ops: OpsT, fn: Callable[[OpsT], Coroutine[Any, Any, T]]) -> T:
    """Run ``fn(ops)`` in a fresh event loop and close ``ops`` afterwards."""

    async def runner() -> T:
        try:
            return await fn(ops)
        finally:
            await ops.aclose()

    return asyncio.run(runner())


def run_with_engine(engine: Engine, fn: Callable[[Engine], Coroutine[Any, Any, T]]) -> T:
    """Run ``fn(engine)`` in a fresh event loop and close the engine afterwards."""
    return run_with(engine, fn)
