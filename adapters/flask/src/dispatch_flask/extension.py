"""The :class:`Dispatch` Flask extension."""

from __future__ import annotations

import atexit
import contextlib
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast, overload

import attrs
from flask import Flask, current_app, has_app_context

from dispatch_core import (
    Backoff,
    ConfigurationError,
    CronSchedule,
    Engine,
    JobContext,
    JobDefinition,
    MisfirePolicy,
    QueueConfig,
    Worker,
    default_name,
)
from dispatch_core.definition import inspect_handler
from dispatch_core.engine import DEFAULT_QUEUE
from dispatch_flask.admin import DEFAULT_PREFIX, mount_admin
from dispatch_flask.cli import dispatch_cli
from dispatch_flask.config import DispatchConfig, read_config, set_defaults
from dispatch_flask.jobs import FlaskJob
from dispatch_flask.middleware import (
    APP_CONTEXT_MIDDLEWARE,
    APP_CONTEXT_ORDER,
    app_context_middleware,
)

if TYPE_CHECKING:
    from dispatch_plugins.admin import Token

__all__ = ["EXTENSION_KEY", "Dispatch"]

P = TypeVar("P")

#: The key of ``app.extensions`` the extension is stored under.
EXTENSION_KEY = "dispatch"

# Engine arguments that make sense as Python objects given in code; the store URL and
# auto_migrate come from app.config instead.
_ENGINE_OPTIONS = frozenset(
    {"plugins", "load_entrypoints", "backoff", "middleware", "hook_timeout", "retention"}
)
_CONFIG_KEY_OF = {
    "store": "DISPATCH_URL",
    "url": "DISPATCH_URL",
    "auto_migrate": "DISPATCH_AUTO_MIGRATE",
}
_DEFAULT_TIMEOUT = 300.0


class FlaskJobDecorator(Protocol):
    """What ``@dispatch.job(...)`` with options returns: a decorator keeping the payload type."""

    @overload
    def __call__(self, fn: Callable[[JobContext], Any], /) -> FlaskJob[None]: ...

    @overload
    def __call__(self, fn: Callable[[JobContext, P], Any], /) -> FlaskJob[P]: ...

    @overload
    def __call__(self, fn: Callable[[P], Any], /) -> FlaskJob[P]: ...

    @overload
    def __call__(self, fn: Callable[[], Any], /) -> FlaskJob[None]: ...


@attrs.define
class _AppState:
    """What the extension keeps for one app: its engine, its config, its job definitions."""

    engine: Engine
    config: DispatchConfig
    definitions: dict[FlaskJob[Any], JobDefinition[Any]] = attrs.Factory(dict)


#: A declaration made in code (a job, a cron entry, a schedule, a queue limit), replayed on
#: the engine of every app the extension is initialized on.
_Declaration = Callable[[_AppState], None]


class Dispatch:
    """Dispatch for Flask: one engine per app, configured from ``app.config``.

    Jobs are declared on the extension, before any app exists, and registered on the engine
    of every app it is initialized on::

        dispatch = Dispatch()

        @dispatch.job(queue="emails")
        async def send_welcome(msg: Welcome) -> None: ...

        def create_app() -> Flask:
            app = Flask(__name__)
            app.config["DISPATCH_URL"] = "sqlite:///jobs.db"
            dispatch.init_app(app)
            return app

    ``send_welcome.enqueue(Welcome(...))`` in a view writes the job through the app engine's
    pooled sync producer; ``flask dispatch worker`` runs it inside ``app.app_context()``.

    Args:
        app: An app to initialize now (else call :meth:`init_app` later, once per app).
        **options: :class:`~dispatch_core.Engine` arguments given in code, used for each
            app's engine: ``plugins``, ``load_entrypoints``, ``backoff``, ``middleware``,
            ``hook_timeout``, ``retention``. The store URL and the rest come from the
            ``DISPATCH_*`` keys of ``app.config``.

    Raises:
        TypeError: an option is not one of those.
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        for key in options:
            if key in _CONFIG_KEY_OF:
                raise TypeError(
                    f"Dispatch() option {key!r} is set by app.config[{_CONFIG_KEY_OF[key]!r}]"
                )
            if key not in _ENGINE_OPTIONS:
                raise TypeError(
                    f"Dispatch() got an unknown option {key!r}; options are "
                    f"{', '.join(sorted(_ENGINE_OPTIONS))}"
                )
        self._options = options
        self._declarations: list[_Declaration] = []
        # Per-app state, never self.app: app factories and several apps per process.
        self._states: weakref.WeakKeyDictionary[Flask, _AppState] = weakref.WeakKeyDictionary()
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"<Dispatch apps={len(self._states)} declarations={len(self._declarations)}>"

    # -- apps --------------------------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Give ``app`` an engine built from its ``DISPATCH_*`` config, the jobs declared on
        this extension, the app-context middleware and the ``flask dispatch`` commands.

        Raises:
            RuntimeError: ``app`` already has a Dispatch extension.
            ConfigurationError: a ``DISPATCH_*`` key holds a bad value (the message names it),
                or the store URL cannot be used.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "A 'Dispatch' instance has already been registered on this Flask app "
                f"({app.name!r}). Import and use that instance instead."
            )
        set_defaults(app.config)
        config = read_config(app.config)
        engine = Engine(config.url, auto_migrate=config.auto_migrate, **self._options)
        engine.middleware.add(
            APP_CONTEXT_MIDDLEWARE, app_context_middleware(app), order=APP_CONTEXT_ORDER
        )
        state = _AppState(engine=engine, config=config)
        for declare in self._declarations:
            declare(state)
        for limits in config.queues:  # after the declarations: the app's config wins
            engine.queue(
                limits.name,
                concurrency=limits.concurrency,
                rate=limits.rate,
                burst=limits.burst,
                per_tenant=limits.per_tenant,
            )
        self._states[app] = state
        _ENGINES.add(engine)
        app.extensions[EXTENSION_KEY] = self
        app.cli.add_command(dispatch_cli)

    def get_engine(self, app: Flask | None = None) -> Engine:
        """The engine of ``app`` (default: ``current_app``, else the only app initialized).

        Raises:
            RuntimeError: the extension is not initialized on that app, or no app context is
                active while it is initialized on several apps.
        """
        return self._state(app).engine

    @property
    def engine(self) -> Engine:
        """The engine of the current app (see :meth:`get_engine`)."""
        return self._state(None).engine

    def get_config(self, app: Flask | None = None) -> DispatchConfig:
        """The configuration read from ``app``'s ``DISPATCH_*`` keys at :meth:`init_app`."""
        return self._state(app).config

    def worker(self, app: Flask | None = None, **overrides: Any) -> Worker:
        """A :class:`~dispatch_core.Worker` for ``app``'s engine, with the
        ``DISPATCH_WORKER_*`` settings; ``overrides`` are Worker arguments that replace them.

        Run it with ``await worker.run()`` (or ``worker.drain()`` in tests); its jobs run in
        ``app.app_context()``.
        """
        state = self._state(app)
        return state.engine.worker(**{**state.config.worker.worker_kwargs(), **overrides})

    def mount_admin(
        self,
        app: Flask,
        *,
        prefix: str = DEFAULT_PREFIX,
        tokens: Sequence[Token] | None = None,
        dashboard: bool = True,
    ) -> None:
        """Serve the admin API and the dashboard of ``app``'s engine under ``prefix``.

        Needs ``pip install 'dispatch-flask[admin]'``. The API is then at ``<prefix>/v1`` and
        the dashboard at ``<prefix>/``; requests need a bearer token (see
        ``docs/operations.md``). Call it after :meth:`init_app`.

        Args:
            app: The Flask app, already initialized.
            prefix: The mount point (default ``/dispatch``).
            tokens: The admin tokens; ``None`` reads ``DISPATCH_ADMIN_TOKENS``.
            dashboard: Serve the dashboard too, not only the API.
        """
        mount_admin(app, self.get_engine(app), prefix=prefix, tokens=tokens, dashboard=dashboard)

    def _state(self, app: Flask | None) -> _AppState:
        if app is None:
            if has_app_context():
                app = cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
            else:
                apps = list(self._states)
                if not apps:
                    raise RuntimeError(
                        "Dispatch is not initialized on any app: call dispatch.init_app(app) "
                        "in your app factory first"
                    )
                if len(apps) > 1:
                    raise RuntimeError(
                        f"Dispatch is initialized on {len(apps)} apps and no app context is "
                        "active, so which app's engine to use is ambiguous: push one with "
                        "'with app.app_context():'"
                    )
                app = apps[0]
        state = self._states.get(app)
        if state is None:
            raise RuntimeError(
                f"Dispatch is not initialized on the Flask app {app.name!r}: call "
                "dispatch.init_app(app) in its app factory"
            )
        return state

    def _definition(self, job: FlaskJob[P], app: Flask | None) -> JobDefinition[P]:
        return cast(JobDefinition[P], self._state(app).definitions[job])

    def _declare(self, declaration: _Declaration) -> None:
        """Keep ``declaration`` for apps to come and apply it to the apps already there."""
        for state in list(self._states.values()):
            declaration(state)
        self._declarations.append(declaration)

    # -- declarations ------------------------------------------------------------------------------

    @overload
    def job(self, fn: Callable[[JobContext], Any]) -> FlaskJob[None]: ...

    @overload
    def job(self, fn: Callable[[JobContext, P], Any]) -> FlaskJob[P]: ...

    @overload
    def job(self, fn: Callable[[P], Any]) -> FlaskJob[P]: ...

    @overload
    def job(self, fn: Callable[[], Any]) -> FlaskJob[None]: ...

    @overload
    def job(
        self,
        fn: None = None,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        max_retries: int = 3,
        timeout: float | None = _DEFAULT_TIMEOUT,
        priority: int = 0,
        backoff: Backoff | None = None,
        aliases: Iterable[str] = (),
        internal: bool = False,
        operator_only: bool = False,
    ) -> FlaskJobDecorator: ...

    def job(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        max_retries: int = 3,
        timeout: float | None = _DEFAULT_TIMEOUT,
        priority: int = 0,
        backoff: Backoff | None = None,
        aliases: Iterable[str] = (),
        internal: bool = False,
        operator_only: bool = False,
    ) -> FlaskJob[Any] | FlaskJobDecorator:
        """Declare a job; use as ``@dispatch.job`` or ``@dispatch.job(queue=...)``, at import
        time, before or after :meth:`init_app`.

        The arguments are those of :meth:`dispatch_core.Engine.job`; the handler is checked
        now (one payload, optionally a :class:`JobContext`) and registered on the engine of
        every app the extension is initialized on.

        Raises:
            ConfigurationError: the handler's signature cannot be a job's.
        """
        alias_names = tuple(aliases)

        def register(f: Callable[..., Any]) -> FlaskJob[Any]:
            inspect_handler(f)  # refuse a bad signature at import, not at init_app
            job: FlaskJob[Any] = FlaskJob(self, f, name or default_name(f))

            def declare(state: _AppState) -> None:
                state.definitions[job] = state.engine.job(
                    name=job.name,
                    queue=queue,
                    max_retries=max_retries,
                    timeout=timeout,
                    priority=priority,
                    backoff=backoff,
                    aliases=alias_names,
                    internal=internal,
                    operator_only=operator_only,
                )(f)

            self._declare(declare)
            return job

        return register(fn) if fn is not None else cast(FlaskJobDecorator, register)

    def cron(
        self,
        expr: str,
        *,
        name: str | None = None,
        timezone: str = "UTC",
        misfire: MisfirePolicy | str = MisfirePolicy.ONCE,
        misfire_grace: float = 60.0,
        queue: str | None = None,
        max_retries: int = 3,
        timeout: float | None = _DEFAULT_TIMEOUT,
        priority: int = 0,
    ) -> Callable[[Callable[..., Any]], FlaskJob[None]]:
        """Declare a job that takes no payload and runs on a cron schedule; the arguments
        are those of :meth:`dispatch_core.Engine.cron`.

        Raises:
            CronExpressionError: the expression or the timezone is invalid (at once).
            ConfigurationError: the handler takes a payload.
        """
        CronSchedule(expr=expr, timezone=timezone)  # refuse a bad expression at import

        def register(fn: Callable[..., Any]) -> FlaskJob[None]:
            _, takes_payload, _ = inspect_handler(fn)
            job_name = name or default_name(fn)
            if takes_payload:
                raise ConfigurationError(
                    f"cron job {job_name!r} takes a payload; use dispatch.schedule(...) to "
                    "give one, or drop the parameter"
                )
            job: FlaskJob[None] = FlaskJob(self, fn, job_name)

            def declare(state: _AppState) -> None:
                state.definitions[job] = state.engine.cron(
                    expr,
                    name=job_name,
                    timezone=timezone,
                    misfire=misfire,
                    misfire_grace=misfire_grace,
                    queue=queue,
                    max_retries=max_retries,
                    timeout=timeout,
                    priority=priority,
                )(fn)

            self._declare(declare)
            return job

        return register

    def schedule(
        self,
        name: str,
        expr: str,
        job: FlaskJob[Any] | str,
        payload: Any = None,
        *,
        timezone: str = "UTC",
        misfire: MisfirePolicy | str = MisfirePolicy.ONCE,
        misfire_grace: float = 60.0,
        queue: str | None = None,
    ) -> None:
        """Enqueue ``job`` with ``payload`` on a cron schedule, on every app's engine; the
        arguments are those of :meth:`dispatch_core.Engine.schedule` (the payload is checked
        when each app registers the entry).

        Raises:
            CronExpressionError: the expression or the timezone is invalid (at once).
        """
        CronSchedule(expr=expr, timezone=timezone)
        if isinstance(job, FlaskJob) and job._extension is not self:
            raise ConfigurationError(
                f"schedule {name!r}: job {job.name!r} was declared on another Dispatch instance"
            )

        def declare(state: _AppState) -> None:
            target = state.definitions[job] if isinstance(job, FlaskJob) else job
            state.engine.schedule(
                name,
                expr,
                target,
                payload,
                timezone=timezone,
                misfire=misfire,
                misfire_grace=misfire_grace,
                queue=queue,
            )

        self._declare(declare)

    def queue(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        rate: float | None = None,
        burst: int | None = None,
        per_tenant: bool = False,
    ) -> QueueConfig:
        """Declare a queue's cluster-wide limits on every app's engine (see
        :meth:`dispatch_core.Engine.queue`); ``DISPATCH_QUEUES`` in an app's config wins."""
        config = QueueConfig(
            name=name, concurrency=concurrency, rate=rate, burst=burst, per_tenant=per_tenant
        )

        def declare(state: _AppState) -> None:
            state.engine.queue(
                name, concurrency=concurrency, rate=rate, burst=burst, per_tenant=per_tenant
            )

        self._declare(declare)
        return config


# The sync producers (a sqlite3 connection, a psycopg pool) are closed at exit, so a pool's
# threads never hold the interpreter up.
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


@atexit.register
def _close_engines() -> None:
    for engine in list(_ENGINES):
        with contextlib.suppress(Exception):  # best effort at exit
            engine.close()
