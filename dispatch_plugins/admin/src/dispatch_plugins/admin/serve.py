"""``dispatch serve``: the admin API and dashboard on uvicorn, optionally with a worker.

The admin app is mounted at ``--prefix`` (``/dispatch``) of a small root app that redirects
``/`` there; the root app's lifespan runs the admin app's (which opens and closes the engine)
and, with ``--worker``, a worker in the same event loop. SIGINT or SIGTERM stops the server
gracefully: it stops accepting connections, lets requests finish, then the worker (running
jobs get its grace period) and the engine.

``dispatch serve examples.demo_app:engine --worker --dev-token`` is a one-command demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dispatch_core import Engine, Worker
from dispatch_core.cli import (
    APP_ENV,
    APP_REF,
    CLIError,
    color_enabled,
    log_level_option,
    logging_to_stderr,
    resolve_engine,
)
from dispatch_plugins.admin.auth import TOKENS_ENV, Scope, Token, load_tokens

if TYPE_CHECKING:
    import socket

    import uvicorn
    from starlette.applications import Starlette

__all__ = ["serve", "build_app", "login_url", "DEFAULT_PREFIX", "WORKER_GRACE_PERIOD"]

log = logging.getLogger("dispatch_plugins.admin")

DEFAULT_PREFIX = "/dispatch"
#: Seconds the in-process worker gives running jobs at shutdown (a server is usually given
#: about 30 s to stop in all, requests included).
WORKER_GRACE_PERIOD = 10.0
#: Seconds beyond the grace period for the worker to release what still runs.
_STOP_MARGIN = 10.0
#: Seconds open connections (a dashboard tab...) get to finish at shutdown.
_CONNECTIONS_GRACE = 10
_DEV_TOKEN_NAME = "dev-token"
_TOKENS_EXAMPLE = (
    '[{"name": "ops", "token": "<at least 16 random characters>", "scopes": ["admin"]}]'
)


# -- the app ---------------------------------------------------------------------------------------


class _WorkerTask:
    """A worker run as a task of the server's loop, without signal handlers (uvicorn owns
    them), stopped gracefully by the lifespan."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._task: asyncio.Task[object] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self.worker.run(install_signal_handlers=False))
        self._task.add_done_callback(self._ended)
        log.info("worker %s runs in the server process", self.worker.id)

    def _ended(self, task: asyncio.Task[object]) -> None:
        if not self._stopping:
            error = None if task.cancelled() else task.exception()
            log.error("worker %s ended while the server runs", self.worker.id, exc_info=error)

    async def stop(self) -> None:
        self._stopping = True
        task = self._task
        if task is None or task.done():
            return
        self.worker.stop()
        done, _ = await asyncio.wait({task}, timeout=self.worker.grace_period + _STOP_MARGIN)
        if not done:  # its jobs' leases expire and another worker rescues them
            log.error("worker %s did not stop in time; cancelling it", self.worker.id)
            task.cancel()
            await asyncio.wait({task})


def build_app(
    engine: Engine,
    *,
    tokens: Sequence[Token],
    prefix: str = DEFAULT_PREFIX,
    worker_options: Mapping[str, Any] | None = None,
) -> Starlette:
    """The app ``dispatch serve`` runs: the admin app at ``prefix``, ``/`` redirecting to it.

    Args:
        engine: The engine to serve; the app opens it at startup and closes it at shutdown.
        tokens: The API tokens.
        prefix: Where to mount the admin app (``/`` for the root).
        worker_options: When given, also run ``engine.worker(**worker_options)`` in the
            app's event loop (``grace_period`` defaults to :data:`WORKER_GRACE_PERIOD`).

    Returns:
        The Starlette app.
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import RedirectResponse, Response
    from starlette.routing import BaseRoute, Mount, Route

    from dispatch_plugins.admin.app import admin_app

    admin = admin_app(engine, tokens=list(tokens), manage_engine=True)
    options = None
    if worker_options is not None:
        options = {"grace_period": WORKER_GRACE_PERIOD, **worker_options}
        engine.worker(**options)  # refuse impossible options now, not at startup

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # A mounted app's lifespan does not run by itself: run it here.
        async with contextlib.AsyncExitStack() as stack:
            state = await stack.enter_async_context(admin.router.lifespan_context(admin))
            if options is not None:
                worker = _WorkerTask(engine.worker(**options))
                stack.push_async_callback(worker.stop)  # stops before the engine closes
                worker.start()
            yield dict(state or {})

    mount = normalize_prefix(prefix)
    if mount == "/":
        routes: list[BaseRoute] = [Mount("", app=admin)]
    else:

        async def to_prefix(request: Request) -> Response:
            return RedirectResponse(f"{mount}/")

        routes = [Route("/", to_prefix), Mount(mount, app=admin)]
    return Starlette(routes=routes, lifespan=lifespan)


def normalize_prefix(prefix: str) -> str:
    """``/dispatch`` for ``dispatch/``, ``/`` for ``""`` or ``/``."""
    return "/" + prefix.strip().strip("/")


def login_url(host: str, port: int, prefix: str, token: str | None = None) -> str:
    """``http://127.0.0.1:8000/dispatch/``, with ``#token=...`` when a token is given (the
    fragment never reaches the server; the dashboard reads it and removes it)."""
    shown = f"[{host}]" if ":" in host else host
    path = normalize_prefix(prefix).rstrip("/") + "/"
    fragment = f"#token={token}" if token else ""
    return f"http://{shown}:{port}{path}{fragment}"


# -- tokens ----------------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def _tokens(tokens_file: Path | None, dev_token: bool, host: str) -> tuple[list[Token], str | None]:
    """The configured tokens, plus a one-off admin token with ``--dev-token``; and that
    token's secret."""
    try:
        tokens = load_tokens(tokens_file)
    except (ValueError, OSError) as exc:
        where = str(tokens_file) if tokens_file is not None else TOKENS_ENV
        raise CLIError(f"cannot load the admin tokens from {where}: {exc}") from exc
    if dev_token:
        if not _is_loopback(host):
            raise CLIError(
                f"--dev-token is refused with --host {host}: the one-off admin token is for "
                "this machine only (--host 127.0.0.1); to serve on the network, configure "
                f"tokens with --tokens-file or {TOKENS_ENV}"
            )
        secret = secrets.token_urlsafe(32)
        tokens.append(Token(name=_DEV_TOKEN_NAME, secret=secret, scopes={Scope.ADMIN.value}))
        return tokens, secret
    if not tokens:
        raise CLIError(
            f"no admin tokens configured: pass --tokens-file FILE or set {TOKENS_ENV} to a JSON "
            f"list such as {_TOKENS_EXAMPLE}, or use --dev-token for a one-off local admin "
            "token"
        )
    return tokens, None


# -- running ---------------------------------------------------------------------------------------


def _make_server(config: uvicorn.Config, on_started: Callable[[int], None]) -> uvicorn.Server:
    """A uvicorn server that calls ``on_started(port)`` once it listens (``--port 0`` picks
    the port)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and self.servers and self.servers[0].sockets:
                on_started(int(self.servers[0].sockets[0].getsockname()[1]))

    return Server(config)


@contextlib.contextmanager
def _absorb_reraised_signals() -> Iterator[None]:
    """After a graceful stop, uvicorn raises the signal that stopped it again, for the
    previous handler: make that a no-op so the command exits normally (status 0)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda s, f: None) for sig in stop_signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _open_store(engine: Engine) -> None:
    """Open (and migrate) the store now: a store that cannot be opened is a one-line error
    before the port is bound."""

    async def check() -> None:
        try:
            await engine.aopen()
        finally:
            await engine.aclose()

    asyncio.run(check())


@click.command()
@click.argument("app", type=APP_REF, required=False)
@click.option(
    "--url",
    metavar="STORE_URL",
    help="Serve this store without application code (no jobs registered: inspection only).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--prefix",
    default=DEFAULT_PREFIX,
    show_default=True,
    help="Path the admin app is mounted at (the API is under PREFIX/v1).",
)
@click.option(
    "--tokens-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"JSON file of API tokens, as in {TOKENS_ENV} (which is read otherwise).",
)
@click.option(
    "--worker/--no-worker",
    default=False,
    show_default=True,
    help="Also run a worker for APP's jobs in the server process.",
)
@click.option(
    "--dev-token",
    is_flag=True,
    help="Make a one-off admin token for this run and print the dashboard's login URL "
    "(loopback --host only).",
)
@log_level_option
def serve(
    app: str | None,
    url: str | None,
    host: str,
    port: int,
    prefix: str,
    tokens_file: Path | None,
    worker: bool,
    dev_token: bool,
    log_level: str,
) -> None:
    """Serve the admin API and the web dashboard of the engine APP.

    APP is MODULE:ATTR naming an Engine, e.g. examples.demo_app:engine (env: DISPATCH_APP);
    without it, --url (or DISPATCH_URL) names the store. The dashboard is at
    http://HOST:PORT/PREFIX/ and the API under PREFIX/v1.

    Requests need a bearer token: configure tokens with --tokens-file or DISPATCH_ADMIN_TOKENS
    (a JSON list of {"name", "token", "scopes", "tenant"?}); without any the server refuses to
    start. --dev-token instead makes a one-off admin token and prints the login URL (only on
    a loopback --host).

    SIGINT or SIGTERM stops the server gracefully (the worker's running jobs get 10 s).

    \b
    Example (a one-command demo):
      dispatch serve examples.demo_app:engine --worker --dev-token
    """
    import uvicorn

    # In the log format of the server: loading the tokens may warn (a file others may read).
    with logging_to_stderr(log_level):
        tokens, secret = _tokens(tokens_file, dev_token, host)
    from_app = app is not None or (url is None and bool(os.environ.get(APP_ENV, "").strip()))
    if worker and not from_app:
        raise CLIError(
            "--worker needs APP, the engine whose jobs it runs "
            "(e.g. dispatch serve examples.demo_app:engine --worker)"
        )
    engine = resolve_engine(app, url)
    _open_store(engine)
    root = build_app(engine, tokens=tokens, prefix=prefix, worker_options={} if worker else None)
    config = uvicorn.Config(
        root,
        host=host,
        port=port,
        log_level=log_level.lower(),
        use_colors=color_enabled(sys.stderr),  # NO_COLOR, and never on a pipe
        lifespan="on",
        timeout_graceful_shutdown=_CONNECTIONS_GRACE,
    )

    def started(bound: int) -> None:
        where = login_url(host, bound, prefix)
        click.echo(
            f"Dispatch admin for {engine.safe_url} at {where} (API: {where}v1)"
            + (", with a worker" if worker else ""),
            err=True,
        )
        if secret is not None:
            click.echo(
                f"Dev token (admin, this run only); dashboard login: "
                f"{login_url(host, bound, prefix, secret)}",
                err=True,
            )

    server = _make_server(config, started)
    with logging_to_stderr(log_level), _absorb_reraised_signals():
        server.run()
