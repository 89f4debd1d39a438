"""The task object ``@app.task`` returns, its ``request``, and how a job runs it.

A :class:`Task` is registered with the app's :class:`dispatch_core.Engine` as a job of the
same name whose payload is the call's arguments (:mod:`dispatch_celery.message`). On a
worker, the job's handler rebuilds the call, refuses to start it after ``expires``, runs the
function with ``self.request`` set, and turns ``self.retry()`` and ``autoretry_for`` into
:class:`dispatch_core.RetryJob`, so the next attempt waits the countdown Celery would have.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, NoReturn, ParamSpec, TypeVar

import attrs

from dispatch_celery.exceptions import EncodeError, MaxRetriesExceededError, Retry
from dispatch_celery.message import aware, decode, encode, json_problem, signature_of
from dispatch_celery.result import AsyncResult, EagerResult
from dispatch_core import FailJob, InvalidTransitionError, JobContext, RetryJob
from dispatch_core.models import utcnow

if TYPE_CHECKING:
    from dispatch_celery.app import Celery

__all__ = ["Task", "Request", "TASK_OPTIONS"]

log = logging.getLogger("dispatch_celery")

P = ParamSpec("P")
R = TypeVar("R")


@attrs.frozen(kw_only=True)
class Request:
    """``self.request`` in a bound task: what this execution is about."""

    #: The job id (``None`` when the function is called directly).
    id: str | None = None
    #: The task name.
    task: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = attrs.Factory(dict)
    #: Retries so far: 0 on the first attempt.
    retries: int = 0
    #: Run by eager mode (``task_always_eager`` or ``task.apply()``).
    is_eager: bool = False
    #: The function was called directly (``task(...)``), not as a task.
    called_directly: bool = True
    #: The id of the worker running it.
    hostname: str | None = None
    #: ``{"queue": ...}``: the queue the job was taken from.
    delivery_info: dict[str, Any] = attrs.Factory(dict)
    #: When the job stops being allowed to start.
    expires: datetime | None = None


_DIRECT = Request()
# The request of the task running in this thread or asyncio task, with the task it is for.
_current: contextvars.ContextVar[tuple[Task[Any, Any], Request] | None] = contextvars.ContextVar(
    "dispatch_celery_request", default=None
)

#: The options ``@app.task`` accepts.
TASK_OPTIONS = frozenset(
    {
        "name",
        "bind",
        "max_retries",
        "default_retry_delay",
        "autoretry_for",
        "dont_autoretry_for",
        "retry_kwargs",
        "retry_backoff",
        "retry_backoff_max",
        "retry_jitter",
        "queue",
        "priority",
        "time_limit",
        "expires",
        "acks_late",
        "ignore_result",
        "track_started",
        "typing",
        "serializer",
    }
)

# Options of Celery's @app.task that dispatch_celery refuses, with why.
_REFUSED_TASK_OPTIONS: dict[str, str] = {
    "base": "custom Task classes are not supported; use Dispatch middleware for wrapping",
    "rate_limit": "rate limits are per queue: app.engine.queue(name, rate=...)",
    "soft_time_limit": "Dispatch has one (hard) time limit: time_limit",
    "exchange": "kombu exchanges do not exist in Dispatch; use queue=",
    "routing_key": "routing keys do not exist in Dispatch; use queue=",
    "throws": "every failure is recorded the same way",
    "trail": "there is no parent/child result tracking",
    "send_events": "Dispatch reports through its lifecycle hooks",
    "compression": "jobs are stored uncompressed",
    "shared": "use dispatch_celery.shared_task",
    "filter": "not supported",
    "lazy": "tasks are registered with the app's engine when it is built",
}


def check_task_options(options: Mapping[str, Any]) -> None:
    """Refuse ``@app.task`` options dispatch_celery does not support (:class:`TypeError`)."""
    for option, value in options.items():
        if option in _REFUSED_TASK_OPTIONS:
            raise TypeError(
                f"@app.task option {option!r} is not supported by dispatch_celery: "
                f"{_REFUSED_TASK_OPTIONS[option]}"
            )
        if option not in TASK_OPTIONS:
            raise TypeError(f"@app.task option {option!r} is not supported by dispatch_celery")
        if option == "serializer" and value != "json":
            raise TypeError(
                f"@app.task option 'serializer'={value!r} is not supported by dispatch_celery: "
                "arguments are JSON (pickle is refused)"
            )


def _exception_types(name: str, value: Any) -> tuple[type[BaseException], ...]:
    items = value if isinstance(value, tuple | list) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(f"{name} takes exception classes, got {item!r}")
    return tuple(items)


def backoff_countdown(factor: int, retries: int, maximum: int, jitter: bool) -> int:
    """Celery's exponential backoff: ``factor * 2**retries`` seconds, capped at ``maximum``,
    then a uniform draw in ``[0, that]`` when ``jitter``."""
    countdown: int = min(maximum, factor * 2 ** min(retries, 62))
    if jitter:
        countdown = random.randrange(countdown + 1)
    return max(0, countdown)


class Task(Generic[P, R]):
    """A Celery-style task: call it, ``delay`` it, ``apply_async`` it, ``retry`` it.

    Built by :meth:`Celery.task <dispatch_celery.Celery.task>` and
    :func:`~dispatch_celery.shared_task`; the attributes hold the options given there, with
    Celery's defaults.

    Attributes:
        name: The task name, which is also the Dispatch job name.
        run: The decorated function.
        max_retries: Retries after the first attempt (default 3).
        default_retry_delay: Seconds before a retry when ``self.retry()`` gives no countdown
            (default 180).
        autoretry_for: Exception types that trigger an automatic ``self.retry``.
        retry_backoff: ``True`` or a factor: automatic retries wait ``factor * 2**retries``
            seconds (capped by ``retry_backoff_max``, 600 by default), with full jitter unless
            ``retry_jitter=False``.
        queue: The queue its jobs go to (default: ``app.conf.task_default_queue``).
        priority: Default priority; higher runs first.
        time_limit: Seconds an attempt may run; ``None`` (the default, as in Celery) for no
            limit.
    """

    def __init__(
        self,
        fn: Callable[..., R],
        *,
        name: str,
        app: Celery | None,
        bind: bool = False,
        max_retries: int = 3,
        default_retry_delay: float = 180,
        autoretry_for: Any = (),
        dont_autoretry_for: Any = (),
        retry_kwargs: Mapping[str, Any] | None = None,
        retry_backoff: bool | int = False,
        retry_backoff_max: int = 600,
        retry_jitter: bool = True,
        queue: str | None = None,
        priority: int | None = None,
        time_limit: float | None = None,
        expires: float | timedelta | datetime | None = None,
        acks_late: bool | None = None,
        ignore_result: bool | None = None,
        track_started: bool | None = None,
        typing: bool = True,
        serializer: str = "json",
    ) -> None:
        if inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"task {name!r} is an async function: dispatch_celery runs plain functions, as "
                "Celery does; register async handlers with app.engine.job instead"
            )
        if max_retries is None:
            raise TypeError(
                f"task {name!r}: max_retries=None (retry forever) is not supported by "
                "dispatch_celery; give a number of retries"
            )
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise TypeError(f"task {name!r}: max_retries must be an int >= 0, got {max_retries!r}")
        if queue is not None and not isinstance(queue, str):
            raise TypeError(f"task {name!r}: queue must be a queue name (str), got {queue!r}")
        retry_kwargs = dict(retry_kwargs or {})
        unknown = set(retry_kwargs) - {"countdown", "max_retries"}
        if unknown:
            raise TypeError(
                f"task {name!r}: retry_kwargs option {sorted(unknown)[0]!r} is not supported "
                "by dispatch_celery (countdown and max_retries are)"
            )
        self.run = fn
        self.name = name
        self._app = app
        self.bind = bind
        self.max_retries = max_retries
        self.default_retry_delay = default_retry_delay
        self.autoretry_for = _exception_types("autoretry_for", autoretry_for)
        self.dont_autoretry_for = _exception_types("dont_autoretry_for", dont_autoretry_for)
        self.retry_kwargs = retry_kwargs
        self.retry_backoff = retry_backoff
        self.retry_backoff_max = retry_backoff_max
        self.retry_jitter = retry_jitter
        self.queue = queue
        self.priority = priority
        self.time_limit = time_limit
        self.expires = expires
        #: Accepted: Dispatch always acknowledges late. A job is leased to one worker and
        #: completed after it ran; a worker that dies loses the lease and the job runs again.
        self.acks_late = acks_late
        self.ignore_result = ignore_result
        self.track_started = track_started
        self.typing = typing
        self.serializer = serializer
        self._signature = signature_of(fn, bound=bind) if typing else None
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)
        self.__qualname__ = getattr(fn, "__qualname__", name)
        self.__module__ = getattr(fn, "__module__", __name__)
        #: The Dispatch job handler; one function object, so every engine registering this
        #: task sees the same handler.
        self.handler = _handler_for(self)

    def __repr__(self) -> str:
        app = self._app.main if self._app is not None else "shared"
        return f"<@task: {self.name} of {app}>"

    @property
    def app(self) -> Celery:
        """The app this task belongs to (for a shared task: the current app)."""
        if self._app is not None:
            return self._app
        from dispatch_celery.app import current_app

        return current_app()

    @property
    def request(self) -> Request:
        """What the running execution is about (:class:`Request`)."""
        current = _current.get()
        if current is not None and current[0] is self:
            return current[1]
        return _DIRECT

    # -- calling -----------------------------------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here, now, as a plain call (``self.request.called_directly``)."""
        token = _current.set((self, _DIRECT))
        try:
            return self._call(args, kwargs)
        finally:
            _current.reset(token)

    def _call(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> R:
        if self.bind:
            return self.run(self, *args, **kwargs)
        return self.run(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        """Enqueue a call: ``apply_async(args, kwargs)``, without options."""
        return self.apply_async(args, kwargs)

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        """Async twin of :meth:`delay`, for code running in an event loop."""
        return await self.aapply_async(args, kwargs)

    def apply_async(
        self,
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
        """Enqueue a call, and return its :class:`~dispatch_celery.AsyncResult` (sync, as in
        Celery: "async" means the task runs elsewhere).

        Args:
            args: Positional arguments (JSON values).
            kwargs: Keyword arguments (JSON values).
            countdown: Run no sooner than this many seconds from now.
            eta: Run no sooner than this time (a naive datetime is read as UTC).
            expires: Seconds, or a time: a job not started by then is revoked, not run.
            queue: The queue (default: the task's).
            priority: Higher runs first (default: the task's).
            options: ``task_id`` (the job's id; sending the same id again returns the first
                job), ``time_limit`` (seconds), ``headers`` (strings), ``serializer="json"``,
                ``ignore_result``; any other Celery option raises :class:`TypeError`.

        Raises:
            TypeError: an option dispatch_celery does not support (the message names it), or
                arguments that do not fit the function.
            EncodeError: an argument is not JSON (the message names it); nothing is written.
        """
        if expires is None:
            expires = self.expires
        app = self.app
        if app.conf.task_always_eager:
            app._check_call_options(
                "apply_async", countdown, eta, expires, queue, priority, options
            )
            return self.apply(args, kwargs, task_id=options.get("task_id"))
        return app._send(
            self.name,
            args,
            kwargs,
            signature=self._signature,
            countdown=countdown,
            eta=eta,
            expires=expires,
            queue=queue,
            priority=priority,
            options=options,
            where="apply_async",
        )

    async def aapply_async(
        self,
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
        """Async twin of :meth:`apply_async` (same arguments)."""
        if expires is None:
            expires = self.expires
        app = self.app
        if app.conf.task_always_eager:
            app._check_call_options(
                "apply_async", countdown, eta, expires, queue, priority, options
            )
            return self.apply(args, kwargs, task_id=options.get("task_id"))
        return await app._asend(
            self.name,
            args,
            kwargs,
            signature=self._signature,
            countdown=countdown,
            eta=eta,
            expires=expires,
            queue=queue,
            priority=priority,
            options=options,
            where="apply_async",
        )

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        throw: bool | None = None,
        **options: Any,
    ) -> EagerResult:
        """Run the task here and now, as a worker would, and return an
        :class:`~dispatch_celery.EagerResult` (what eager mode does).

        Arguments go through JSON as on a worker (tuples arrive as lists). Retries run at
        once, without their countdown, up to ``max_retries``. Scheduling options
        (``countdown``, ``eta``, ``expires``...) are checked and then have no effect, as in
        Celery.

        Args:
            throw: Re-raise a failure here (default: ``app.conf.task_eager_propagates``).
        """
        app = self.app
        app._check_call_options(
            "apply",
            options.pop("countdown", None),
            options.pop("eta", None),
            options.pop("expires", None),
            options.pop("queue", None),
            options.pop("priority", None),
            options,
        )
        json_args, json_kwargs = encode(self.name, args, kwargs, signature=self._signature)
        propagate = app.conf.task_eager_propagates if throw is None else throw
        task_id = options.get("task_id") or str(uuid.uuid4())
        retries = 0
        while True:
            request = Request(
                id=task_id,
                task=self.name,
                args=tuple(json_args),
                kwargs=json_kwargs,
                retries=retries,
                is_eager=True,
                called_directly=False,
            )
            try:
                value = self._attempt(request, json_args, json_kwargs)
                self._check_result(value)
            except Retry:
                retries += 1
                continue
            except Exception as exc:
                if propagate:
                    raise
                return EagerResult(task_id, exc=exc, retries=retries, name=self.name)
            return EagerResult(task_id, value=value, retries=retries, name=self.name)

    def AsyncResult(self, task_id: str) -> AsyncResult:  # Celery's name
        """The result of the job ``task_id`` of this task's app."""
        return AsyncResult(task_id, app=self.app)

    # -- retrying ----------------------------------------------------------------------------------

    def retry(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> NoReturn:
        """End this attempt and run the task again later (call it in a bound task).

        ``raise self.retry(exc=exc, countdown=60)``: the next attempt runs after
        ``countdown`` seconds (or at ``eta``; default ``default_retry_delay``). With no retry
        left, ``exc`` is raised (or :class:`MaxRetriesExceededError` without one) and the
        task fails.

        Args:
            exc: The error that made the attempt fail (recorded, and re-raised when no retry
                is left).
            eta: When to retry (a naive datetime is read as UTC).
            countdown: Seconds until the retry.
            max_retries: This call's limit instead of the task's. The job cannot run more
                than the task's ``max_retries`` allow, so a larger limit has no effect.

        Raises:
            Retry: always, when a retry is left (the worker catches it).
            TypeError: ``args``, ``kwargs``, ``throw=False`` or another option: a retry
                runs the same call, and always ends the attempt.
        """
        if args is not None or kwargs is not None:
            name = "args" if args is not None else "kwargs"
            raise TypeError(
                f"Task.retry option {name!r} is not supported by dispatch_celery: a retry runs "
                "the job again with the same arguments"
            )
        if not throw:
            raise TypeError(
                "Task.retry option 'throw'=False is not supported by dispatch_celery: a retry "
                "ends the attempt"
            )
        for option in options:
            raise TypeError(f"Task.retry option {option!r} is not supported by dispatch_celery")
        request = self.request
        if request.called_directly:
            # As in Celery: outside a worker there is nothing to retry.
            raise exc if exc is not None else Retry("Task can be retried", None)
        limit = self.max_retries if max_retries is None else max_retries
        if request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} kwargs:{request.kwargs}"
            )
        if countdown is None:
            if eta is not None:
                countdown = (aware(eta) - utcnow()).total_seconds()
            else:
                countdown = self.default_retry_delay
        raise Retry(exc=exc, when=max(float(countdown), 0.0))

    # -- execution ---------------------------------------------------------------------------------

    def _attempt(self, request: Request, args: list[Any], kwargs: dict[str, Any]) -> R:
        """Run one attempt with ``request`` in force; apply ``autoretry_for``."""
        token = _current.set((self, request))
        try:
            try:
                return self._call(args, kwargs)
            except Retry:
                raise
            except Exception as exc:
                if self._autoretries(exc):
                    self.retry(exc=exc, **self._autoretry_options(request))
                raise
        finally:
            _current.reset(token)

    def _autoretries(self, exc: Exception) -> bool:
        return (
            bool(self.autoretry_for)
            and isinstance(exc, self.autoretry_for)
            and not (self.dont_autoretry_for and isinstance(exc, self.dont_autoretry_for))
        )

    def _autoretry_options(self, request: Request) -> dict[str, Any]:
        options = dict(self.retry_kwargs)
        if self.retry_backoff:
            factor = 1 if self.retry_backoff is True else int(self.retry_backoff)
            options["countdown"] = backoff_countdown(
                factor, request.retries, self.retry_backoff_max, self.retry_jitter
            )
        return options

    def _execute(self, ctx: JobContext, payload: Any) -> Any:
        """The job handler: run one attempt of the call a job carries."""
        message = decode(self.name, payload)
        job = ctx.job
        deadline = message.deadline(job.created_at)
        if deadline is not None and utcnow() >= deadline:
            # Celery revokes an expired task instead of running it: cancel the job. Our lease
            # ends with it, so the worker drops this attempt's outcome.
            log.info("task %s[%s] expired at %s: revoked", self.name, job.id, deadline)
            with contextlib.suppress(InvalidTransitionError):  # already cancelled
                ctx.engine.cancel(job.id)
            return None
        request = Request(
            id=job.id,
            task=self.name,
            args=tuple(message.args),
            kwargs=message.kwargs,
            retries=job.attempt - 1,
            called_directly=False,
            hostname=ctx.worker_id,
            delivery_info={"queue": job.queue},
            expires=deadline,
        )
        try:
            value = self._attempt(request, message.args, message.kwargs)
            self._check_result(value)
        except Retry as retry:
            raise RetryJob(delay=retry.when, reason=str(retry)) from (retry.exc or retry)
        except Exception as exc:
            # As in Celery, an exception that is not a retry fails the task at once.
            raise FailJob(str(exc) or type(exc).__name__) from exc
        return value

    def _check_result(self, value: Any) -> None:
        problem = json_problem(value, "the return value")
        if problem:
            raise EncodeError(self.name, [f"{problem}; results are stored as JSON"])

    # -- canvas: not supported ---------------------------------------------------------------------

    def _canvas(self, method: str) -> NoReturn:
        raise TypeError(
            f"Task.{method}() is canvas (signatures, chains, groups, chords), which "
            "dispatch_celery does not support; call delay/apply_async, or use Dispatch workflows"
        )

    def s(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Not supported: canvas. Raises :class:`TypeError`."""
        self._canvas("s")

    def si(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Not supported: canvas. Raises :class:`TypeError`."""
        self._canvas("si")

    def signature(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Not supported: canvas. Raises :class:`TypeError`."""
        self._canvas("signature")

    def subtask(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Not supported: canvas. Raises :class:`TypeError`."""
        self._canvas("subtask")

    def map(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Not supported: canvas. Raises :class:`TypeError`."""
        self._canvas("map")

    def starmap(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Not supported: canvas. Raises :class:`TypeError`."""
        self._canvas("starmap")

    def chunks(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Not supported: canvas. Raises :class:`TypeError`."""
        self._canvas("chunks")


def _handler_for(task: Task[Any, Any]) -> Callable[[JobContext, Any], Any]:
    # A plain function: the worker runs it in its thread pool, as Celery runs tasks.
    def run_task(ctx: JobContext, payload: Any) -> Any:
        return task._execute(ctx, payload)

    run_task.__qualname__ = run_task.__name__ = f"task {task.name}"
    return run_task
