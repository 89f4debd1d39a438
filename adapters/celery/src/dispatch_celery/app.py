"""The :class:`Celery` app: a Celery-style front over one :class:`dispatch_core.Engine`."""

from __future__ import annotations

import importlib
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Concatenate, Literal, NoReturn, ParamSpec, TypeVar, overload

from dispatch_celery.beat import compile_beat_schedule
from dispatch_celery.config import ENGINE_SETTINGS, Settings
from dispatch_celery.message import call_options, encode
from dispatch_celery.result import AsyncResult
from dispatch_celery.task import Task, check_task_options
from dispatch_core import ConfigurationError, Engine, Retention, StoreURLError
from dispatch_core.models import utcnow

__all__ = ["Celery", "current_app", "shared_task"]

P = ParamSpec("P")
R = TypeVar("R")

# Celery constructor arguments dispatch_celery refuses when given, with why.
_REFUSED_APP_ARGS: dict[str, str] = {
    "loader": "settings come from app.conf and config_from_object",
    "amqp": "there is no AMQP layer",
    "events": "Dispatch reports through its lifecycle hooks",
    "log": "Dispatch logs with the standard logging module",
    "control": "there is no remote control; use the dispatch CLI",
    "tasks": "register tasks with @app.task",
    "changes": "use app.conf",
    "fixups": "not supported",
    "task_cls": "custom Task classes are not supported; use Dispatch middleware",
    "namespace": "give the namespace to config_from_object",
}

_default_app: Celery | None = None
_apps: weakref.WeakSet[Celery] = weakref.WeakSet()
_shared_tasks: list[Task[Any, Any]] = []
_state_lock = threading.RLock()


def current_app() -> Celery:
    """The current app: the last one created (or made current with ``set_default``).

    Raises:
        RuntimeError: no app exists yet.
    """
    if _default_app is None:
        raise RuntimeError(
            "no Celery app exists yet: create one with dispatch_celery.Celery(...) before "
            "using a shared_task or an AsyncResult without app="
        )
    return _default_app


def _task_name(app_main: str | None, fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "__main__"
    if module == "__main__" and app_main:
        module = app_main
    return f"{module}.{fn.__name__}"


class Celery:
    """A Celery-style app whose tasks are Dispatch jobs.

    ``Celery("tasks", broker="sqlite:///tasks.db")`` keeps Celery's shape: ``@app.task``,
    ``app.conf``, ``send_task``, ``AsyncResult``, ``beat_schedule``. Its
    :attr:`engine` (built on first use) holds the jobs; run workers with
    ``dispatch worker tasks:app.engine``.

    Where jobs are stored, first match wins:

    1. the ``DISPATCH_URL`` environment variable (as ``CELERY_BROKER_URL`` overrides the
       broker in Celery, so deployments choose the store);
    2. ``broker`` (or ``app.conf.broker_url``), which must be a Dispatch store URL:
       ``sqlite:///tasks.db``, ``postgresql://…``, ``redis://…``, ``memory://``;
    3. Dispatch's default, ``sqlite:///dispatch.db``.

    A Celery transport URL (``amqp://``, ``pyamqp://``, ``sqs://``…) with no
    ``DISPATCH_URL`` set is an error when the engine is built (on the first enqueue, or when
    a worker loads the app), not silently replaced.

    Args:
        main: The app name; names the tasks of a ``__main__`` module.
        broker: A Dispatch store URL (see above).
        backend: Must be ``None`` (or the same URL as the store): results are kept with each
            job in the store. Any result backend raises :class:`TypeError`.
        include: Modules to import when the engine is built (the worker imports them to
            register their tasks, as Celery's worker does).
        set_as_current: Make this app the current one (for ``shared_task``).
        config_source: Settings to load, as :meth:`config_from_object` takes them.
        engine: An engine to use instead of building one (to share it with a web adapter);
            ``broker`` must then be left out.
        strict_typing: Check calls against the task function's signature at enqueue (Celery's
            default).
        settings: Further settings for :attr:`conf` (Celery accepts them as keywords too).

    Raises:
        TypeError: a constructor argument or setting dispatch_celery does not support.
    """

    def __init__(
        self,
        main: str | None = None,
        *,
        broker: str | None = None,
        backend: str | None = None,
        include: Iterable[str] | None = None,
        set_as_current: bool = True,
        config_source: Any = None,
        engine: Engine | None = None,
        strict_typing: bool = True,
        autofinalize: bool = True,
        **settings: Any,
    ) -> None:
        for arg, why in _REFUSED_APP_ARGS.items():
            if settings.pop(arg, None) is not None:
                raise TypeError(
                    f"Celery argument {arg!r} is not supported by dispatch_celery: {why}"
                )
        if not autofinalize:
            raise TypeError(
                "Celery argument 'autofinalize'=False is not supported by dispatch_celery: the "
                "engine is built on first use"
            )
        if engine is not None and broker is not None:
            raise TypeError("give Celery(engine=...) or broker=..., not both")
        self.main = main
        self._lock = threading.RLock()
        self._engine: Engine | None = None
        self._given_engine = engine
        self._remote: Engine | None = None
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._beat_compiled: Any = None
        self._include = list(include or ())
        self._strict_typing = strict_typing
        self.conf = Settings(on_change=self._setting_changed)
        if config_source is not None:
            self.conf.load(config_source)
        if broker is not None:
            self.conf.broker_url = broker
        if backend is not None and backend != self.conf.broker_url:
            self.conf.result_backend = backend  # raises TypeError: no result backends
        self.conf.update(settings)
        with _state_lock:
            _apps.add(self)
            for task in _shared_tasks:
                self._add_task(task)
        if set_as_current:
            self.set_default()

    def __repr__(self) -> str:
        return f"<Celery {self.main or '__main__'} tasks={sorted(self._tasks)}>"

    # -- configuration ---------------------------------------------------------------------------

    def set_default(self) -> None:
        """Make this app the current one (for ``shared_task`` and ``AsyncResult(id)``)."""
        global _default_app
        _default_app = self

    set_current = set_default

    def config_from_object(
        self, obj: Any, silent: bool = False, force: bool = False, namespace: str | None = None
    ) -> None:
        """Load settings from a module (or its name, ``"celeryconfig"``), a class or a dict.

        Args:
            obj: The settings holder; a string is imported (``"pkg.module"`` or
                ``"pkg.module:attr"``).
            silent: Ignore a module that cannot be imported.
            force: Accepted (settings are applied at once anyway).
            namespace: Read only names with this prefix (``"CELERY"`` reads
                ``CELERY_BROKER_URL`` as ``broker_url``), as Django projects do.

        Raises:
            TypeError: a setting dispatch_celery does not support.
        """
        try:
            self.conf.load(obj, namespace)
        except ImportError:
            if not silent:
                raise

    def _setting_changed(self, key: str) -> None:
        if key in ENGINE_SETTINGS and self._engine is not None:
            raise RuntimeError(
                f"app.conf.{key} cannot change once the app's engine is built (by the first "
                "enqueue, app.engine, or a worker loading the app); set it before"
            )

    # -- tasks -----------------------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self, *, bind: Literal[True], **options: Any
    ) -> Callable[[Callable[Concatenate[Any, P], R]], Task[P, R]]: ...

    @overload
    def task(
        self, *, bind: Literal[False] = False, **options: Any
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(self, *args: Any, bind: bool = False, **options: Any) -> Any:
        """Register a function as a task; use as ``@app.task`` or ``@app.task(...)``.

        Args:
            name: The task name (default ``module.function``), also the Dispatch job name.
            bind: Pass the task as first argument (``self``), for ``self.retry`` and
                ``self.request``.
            max_retries: Retries after the first attempt (default 3).
            default_retry_delay: Seconds before a ``self.retry()`` without countdown
                (default 180).
            autoretry_for: Exception types retried automatically.
            dont_autoretry_for: Exception types never retried automatically.
            retry_kwargs: ``countdown`` and/or ``max_retries`` for automatic retries.
            retry_backoff: ``True`` (factor 1) or a factor: automatic retries wait
                ``factor * 2**retries`` seconds.
            retry_backoff_max: Cap of that wait (default 600).
            retry_jitter: Draw the wait uniformly below it (default ``True``).
            queue: The queue of its jobs (default ``app.conf.task_default_queue``).
            priority: Default priority; higher runs first.
            time_limit: Seconds an attempt may run (default: no limit).
            expires: Default ``expires`` of its calls.
            acks_late: Accepted: Dispatch always acknowledges after the run (leases).
            ignore_result, track_started: Accepted: results are kept and runs are tracked
                anyway.
            typing: Check calls against the signature (default ``True``).
            serializer: ``"json"`` only.

        Raises:
            TypeError: an option dispatch_celery does not support (the message names it), an
                ``async def`` function, or ``max_retries=None``.
            ConfigurationError: another function already has this task name.
        """

        def register(f: Callable[..., Any]) -> Task[Any, Any]:
            task = self._make_task(f, app=self, bind=bind, options=options)
            self._add_task(task)
            return task

        check_task_options(options)
        if args:
            # @app.task without parentheses: the function is the only argument.
            if len(args) > 1 or not callable(args[0]):
                raise TypeError("@app.task takes options as keywords: @app.task(name=...)")
            return register(args[0])
        return register

    def _make_task(
        self,
        fn: Callable[..., Any],
        *,
        app: Celery | None,
        bind: bool,
        options: dict[str, Any],
    ) -> Task[Any, Any]:
        if not callable(fn):
            raise TypeError(f"@app.task decorates a function, got {fn!r}")
        options = dict(options)
        options.setdefault("typing", self._strict_typing)
        name = options.pop("name", None) or _task_name(self.main, fn)
        return Task(fn, name=name, app=app, bind=bind, **options)

    def _add_task(self, task: Task[Any, Any]) -> None:
        with self._lock:
            existing = self._tasks.get(task.name)
            if existing is not None and existing.run is not task.run:
                raise ConfigurationError(
                    f"task name {task.name!r} is already registered by "
                    f"{existing.run.__module__}.{existing.run.__qualname__}"
                )
            self._tasks[task.name] = task
            if self._engine is not None:
                self._register(self._engine, task)

    def _register(self, engine: Engine, task: Task[Any, Any]) -> None:
        conf = self.conf
        priority = task.priority if task.priority is not None else conf.task_default_priority
        engine.job(
            name=task.name,
            queue=task.queue or conf.task_default_queue,
            max_retries=task.max_retries,
            timeout=task.time_limit if task.time_limit is not None else conf.task_time_limit,
            priority=priority or 0,
        )(task.handler)

    @property
    def tasks(self) -> dict[str, Task[Any, Any]]:
        """The registered tasks by name."""
        return dict(self._tasks)

    def add_periodic_task(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Not supported: it takes signatures (canvas). Raises :class:`TypeError`; use
        ``app.conf.beat_schedule``."""
        raise TypeError(
            "add_periodic_task is not supported by dispatch_celery (it takes signatures, "
            "which are canvas): declare the entry in app.conf.beat_schedule"
        )

    def autodiscover_tasks(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Not supported. Raises :class:`TypeError`; list the modules in ``include=``."""
        raise TypeError(
            "autodiscover_tasks is not supported by dispatch_celery: list the task modules "
            "in Celery(..., include=[...])"
        )

    # -- the engine ------------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The Dispatch engine holding this app's jobs, built on first use.

        Building it imports the ``include`` modules, registers every task as a job, and
        declares ``app.conf.beat_schedule`` as cron entries (re-declared on each access if the
        schedule changed). Point ``dispatch worker`` at it: ``dispatch worker tasks:app.engine``.

        Raises:
            ConfigurationError: the store URL is not a Dispatch store URL (see the class).
            TypeError: a beat entry uses something dispatch_celery does not support.
        """
        engine = self._get_engine()
        self._declare_beat(engine)
        return engine

    def _get_engine(self) -> Engine:
        engine = self._engine
        if engine is not None:
            return engine
        with self._lock:
            if self._engine is None:
                for module in self._include:
                    importlib.import_module(module)
                engine = self._given_engine or self._build_engine()
                for task in self._tasks.values():
                    self._register(engine, task)
                self._engine = engine
            return self._engine

    def _build_engine(self) -> Engine:
        expires = self.conf.result_expires
        if isinstance(expires, int | float):
            expires = timedelta(seconds=expires)
        retention = (
            Retention(completed=expires, failed=expires, cancelled=expires)
            if expires is not None
            else Retention.keep_everything()
        )
        url = os.environ.get("DISPATCH_URL") or self.conf.broker_url
        try:
            return Engine(url or None, retention=retention)
        except StoreURLError as exc:
            raise ConfigurationError(
                f"broker {url!r} is not a Dispatch store URL ({exc}); dispatch_celery keeps "
                "jobs in a Dispatch store: pass broker='sqlite:///tasks.db', "
                "'postgresql://...' or 'redis://...', or set DISPATCH_URL"
            ) from exc

    def _declare_beat(self, engine: Engine) -> None:
        schedule = self.conf.beat_schedule
        timezone = self.conf.timezone or "UTC"
        snapshot = (repr(schedule), timezone)
        if snapshot == self._beat_compiled:
            return
        compile_beat_schedule(self, engine, schedule, timezone)
        self._beat_compiled = snapshot

    def _remote_engine(self) -> Engine:
        """An engine over the same store for ``send_task`` of tasks not registered here.

        The main engine refuses unknown job names, and its workers must not claim them (they
        could not run them); this engine registers a placeholder per name and never runs a
        worker.
        """
        with self._lock:
            if self._remote is None:
                main = self._get_engine()
                try:
                    if main.url.startswith("memory:"):
                        raise StoreURLError("an in-process store is shared, not reopened")
                    self._remote = Engine(main.url)
                except StoreURLError:
                    self._remote = Engine(main.store, auto_migrate=False)
            return self._remote

    def _remote_definition(self, name: str) -> Engine:
        remote = self._remote_engine()
        if name not in remote.jobs:

            def elsewhere(payload: Any) -> None:  # never run: no worker uses this engine
                raise RuntimeError(f"task {name!r} runs on the workers that register it")

            remote.job(name=name)(elsewhere)
        return remote

    # -- sending ---------------------------------------------------------------------------------

    def _check_call_options(
        self,
        where: str,
        countdown: float | None,
        eta: datetime | None,
        expires: Any,
        queue: str | None,
        priority: int | None,
        options: Mapping[str, Any],
    ) -> None:
        call_options(
            where,
            countdown=countdown,
            eta=eta,
            expires=expires,
            queue=queue,
            priority=priority,
            options=options,
            now=utcnow(),
        )

    def _prepare(
        self,
        name: str,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        signature: Any,
        where: str,
        countdown: float | None,
        eta: datetime | None,
        expires: Any,
        queue: str | None,
        priority: int | None,
        options: Mapping[str, Any],
    ) -> tuple[Engine, dict[str, Any], dict[str, Any]]:
        from dispatch_celery.message import Message

        opts = call_options(
            where,
            countdown=countdown,
            eta=eta,
            expires=expires,
            queue=queue,
            priority=priority,
            options=options,
            now=utcnow(),
        )
        json_args, json_kwargs = encode(name, args, kwargs, signature=signature)
        payload = Message(args=json_args, kwargs=json_kwargs, expires=opts.expires).payload()
        engine = self._get_engine()
        if name not in engine.jobs:
            engine = self._remote_definition(name)
        return engine, payload, opts.enqueue_options()

    def _send(self, name: str, args: Any, kwargs: Any, **call: Any) -> AsyncResult:
        engine, payload, options = self._prepare(
            name,
            args,
            kwargs,
            call.pop("signature", None),
            call.pop("where"),
            call.pop("countdown"),
            call.pop("eta"),
            call.pop("expires"),
            call.pop("queue"),
            call.pop("priority"),
            call.pop("options"),
        )
        job = engine.enqueue(name, payload, **options)
        return AsyncResult(job.id, app=self)

    async def _asend(self, name: str, args: Any, kwargs: Any, **call: Any) -> AsyncResult:
        engine, payload, options = self._prepare(
            name,
            args,
            kwargs,
            call.pop("signature", None),
            call.pop("where"),
            call.pop("countdown"),
            call.pop("eta"),
            call.pop("expires"),
            call.pop("queue"),
            call.pop("priority"),
            call.pop("options"),
        )
        job = await engine.aenqueue(name, payload, **options)
        return AsyncResult(job.id, app=self)

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | timedelta | datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Enqueue a call of the task ``name``, which need not be registered in this process
        (the workers that register it run it). Options as for
        :meth:`Task.apply_async <dispatch_celery.Task.apply_async>`.

        A name no worker registers stays ``PENDING``, as in Celery. Eager mode does not apply
        (as in Celery): the job is always enqueued.

        Raises:
            TypeError: an option dispatch_celery does not support.
            EncodeError: an argument is not JSON.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"send_task takes a task name (str), got {name!r}")
        task = self._tasks.get(name)
        return self._send(
            name,
            args,
            kwargs,
            signature=task._signature if task is not None else None,
            where="send_task",
            countdown=countdown,
            eta=eta,
            expires=expires if expires is not None or task is None else task.expires,
            queue=queue,
            priority=priority,
            options=options,
        )

    def AsyncResult(self, id: str) -> AsyncResult:  # Celery's name
        """The result of the job ``id`` in this app's store."""
        return AsyncResult(id, app=self)

    def close(self) -> None:
        """Release the blocking-call resources of the app's engines (their sync store
        connections and threads). The app can still be used: they reopen on demand."""
        for engine in (self._engine, self._remote):
            if engine is not None and engine is not self._given_engine:
                engine.close()

    # -- workers ---------------------------------------------------------------------------------

    def worker_main(self, argv: Sequence[str] | None = None) -> NoReturn:
        """Not supported. Raises :class:`TypeError`; run ``dispatch worker MODULE:app.engine``."""
        raise TypeError(
            "worker_main is not supported by dispatch_celery: run workers with "
            "'dispatch worker MODULE:app.engine' (e.g. dispatch worker tasks:app.engine)"
        )

    def start(self, argv: Sequence[str] | None = None) -> NoReturn:
        """Not supported. Raises :class:`TypeError`; use the ``dispatch`` command."""
        raise TypeError(
            "app.start is not supported by dispatch_celery: use the dispatch command, e.g. "
            "'dispatch worker MODULE:app.engine'"
        )


@overload
def shared_task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def shared_task(
    *, bind: Literal[True], **options: Any
) -> Callable[[Callable[Concatenate[Any, P], R]], Task[P, R]]: ...


@overload
def shared_task(
    *, bind: Literal[False] = False, **options: Any
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def shared_task(
    fn: Callable[..., Any] | None = None, /, *, bind: bool = False, **options: Any
) -> Any:
    """A task for library code, registered with every app (those existing and those created
    later); calling it uses the current app (:func:`current_app`). Options as for
    :meth:`Celery.task`.
    """

    def register(f: Callable[..., Any]) -> Task[Any, Any]:
        opts = dict(options)
        name = opts.pop("name", None) or _task_name(None, f)
        task: Task[Any, Any] = Task(f, name=name, app=None, bind=bind, **opts)
        with _state_lock:
            _shared_tasks.append(task)
            for app in list(_apps):
                app._add_task(task)
        return task

    check_task_options(options)
    return register(fn) if fn is not None else register
