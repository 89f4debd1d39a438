"""``AsyncResult``: a task's state and result, read from the Dispatch store.

There is no result backend: a job keeps its result (or its error) in the store, so the
result of a call is its job. Job states map onto Celery's state names
(:func:`dispatch_celery.states.from_job_state`); an id the store does not know is
``PENDING``, as in Celery (which cannot tell "not yet known" from "never sent" either).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import re
import sys
import time
import traceback as tb
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dispatch_celery import states
from dispatch_celery.exceptions import TaskFailedError, TaskRevokedError, TimeoutError
from dispatch_core import InvalidTransitionError, Job, JobNotFoundError, current_job

if TYPE_CHECKING:
    from dispatch_celery.app import Celery

__all__ = ["AsyncResult", "EagerResult", "rebuild_exception"]

_FIRST_POLL = 0.01  # get() polls fast at first, then every `interval` seconds
_TRACEBACK_START = "\n\nTraceback (most recent call last):"


def rebuild_exception(error: str | None) -> BaseException:
    """The exception a failed job recorded, rebuilt from its error text when possible.

    A worker records ``"Type: message"`` and the traceback. The exception is rebuilt with its
    message when its type is a built-in exception, or a class of a module already imported in
    this process whose constructor takes the message; otherwise the result is a
    :class:`~dispatch_celery.exceptions.TaskFailedError` holding the type name, the message
    and the traceback. (Modules are never imported on the store's say-so.)
    """
    text = error or ""
    head, _, rest = text.partition(_TRACEBACK_START)
    type_name, sep, message = head.partition(": ")
    if not sep:
        type_name, message = head.strip(), ""
    type_name = type_name.strip()
    qualified = _qualified_name(type_name, rest)
    cls = _find_exception_class(qualified)
    if cls is not None:
        try:
            return cls(message)
        except Exception:
            pass
    return TaskFailedError(qualified or "Exception", message, text)


def _qualified_name(type_name: str, traceback_text: str) -> str:
    """``module.Type`` from the traceback's last lines (which name it so), else the name."""
    if not type_name.isidentifier():
        return type_name
    pattern = re.compile(rf"^((?:[\w]+\.)*){re.escape(type_name)}(?::|$)")
    for line in reversed(traceback_text.splitlines()):
        match = pattern.match(line)
        if match:
            return match.group(1) + type_name
    return type_name


def _find_exception_class(qualified: str) -> type[BaseException] | None:
    module_name, _, name = qualified.rpartition(".")
    candidate: Any
    if not module_name:
        candidate = getattr(builtins, name, None)
    else:
        module = sys.modules.get(module_name)
        candidate = getattr(module, name, None) if module is not None else None
    if isinstance(candidate, type) and issubclass(candidate, Exception):
        return candidate
    return None


class AsyncResult:
    """The state and result of a task call, by its id (the Dispatch job id).

    ``delay`` and ``apply_async`` return one; ``AsyncResult(id)`` (or
    ``app.AsyncResult(id)``) finds it again in another process. Each property reads the
    store anew (no caching), so a result object can be polled.

    Args:
        id: The job id (``job_…``).
        app: The app whose store to read (default: the current app).
    """

    def __init__(self, id: str, app: Celery | None = None) -> None:
        if not isinstance(id, str) or not id:
            raise TypeError(f"AsyncResult takes a task id (str), got {id!r}")
        self.id = id
        self._app = app

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def task_id(self) -> str:
        """The id (Celery's alias)."""
        return self.id

    @property
    def app(self) -> Celery:
        """The app whose store this result reads."""
        if self._app is None:
            from dispatch_celery.app import current_app

            self._app = current_app()
        return self._app

    # -- reading the job ---------------------------------------------------------------------------

    def job(self) -> Job | None:
        """The job as stored now, or ``None`` if the store does not know the id (never
        enqueued, or deleted by retention)."""
        try:
            return self.app._get_engine().get_job(self.id)
        except JobNotFoundError:
            return None

    async def ajob(self) -> Job | None:
        """Async twin of :meth:`job`."""
        try:
            return await self.app._get_engine().aget_job(self.id)
        except JobNotFoundError:
            return None

    @property
    def state(self) -> str:
        """The Celery state name: ``PENDING``, ``STARTED``, ``RETRY``, ``SUCCESS``,
        ``FAILURE`` or ``REVOKED``."""
        return _state_of(self.job())

    @property
    def status(self) -> str:
        """Same as :attr:`state`."""
        return self.state

    def ready(self) -> bool:
        """Whether the task finished: succeeded, failed or was revoked."""
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        """Whether the task succeeded."""
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        """Whether the task failed."""
        return self.state == states.FAILURE

    @property
    def result(self) -> Any:
        """The return value once ``SUCCESS``; the exception when ``FAILURE`` or ``RETRY``
        (the last attempt's); a :class:`TaskRevokedError` when ``REVOKED``; else ``None``."""
        return _value_of(self.job())

    @property
    def info(self) -> Any:
        """Same as :attr:`result`."""
        return self.result

    @property
    def traceback(self) -> str | None:
        """The error the last failed attempt recorded (type, message and traceback)."""
        job = self.job()
        return job.last_error if job is not None else None

    @property
    def retries(self) -> int:
        """Retries so far (attempts started minus one)."""
        job = self.job()
        return max(job.attempt - 1, 0) if job is not None else 0

    @property
    def date_done(self) -> datetime | None:
        """When the task finished, if it did."""
        job = self.job()
        return job.finished_at if job is not None else None

    @property
    def name(self) -> str | None:
        """The task name, if the job is known."""
        job = self.job()
        return job.name if job is not None else None

    @property
    def queue(self) -> str | None:
        """The queue of the job, if the job is known."""
        job = self.job()
        return job.queue if job is not None else None

    @property
    def args(self) -> list[Any] | None:
        """The positional arguments of the call, if the job is known."""
        args = _payload_part(self.job(), "args")
        return args if isinstance(args, list) else None

    @property
    def kwargs(self) -> dict[str, Any] | None:
        """The keyword arguments of the call, if the job is known."""
        kwargs = _payload_part(self.job(), "kwargs")
        return kwargs if isinstance(kwargs, dict) else None

    # -- waiting ----------------------------------------------------------------------------------

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
        **options: Any,
    ) -> Any:
        """Wait until the task finished, polling the store, and return its value.

        Args:
            timeout: Seconds to wait at most (default: forever).
            propagate: Re-raise the task's exception when it failed (and raise
                :class:`TaskRevokedError` when it was revoked); else return it.
            interval: Longest pause between two reads of the store (polls start faster).
            disable_sync_subtasks: Refuse to wait inside a running task (a worker slot
                waiting for another job can deadlock the cluster), as Celery does.

        Raises:
            dispatch_celery.exceptions.TimeoutError: not finished within ``timeout``.
            RuntimeError: called inside a running task.
            TypeError: an option dispatch_celery does not support (``callback``, ...).
        """
        self._check_get(disable_sync_subtasks, options)
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = _FIRST_POLL
        while True:
            job = self.job()
            done = _finished(job, propagate)
            if done is not _NOT_DONE:
                return done
            pause = _next_pause(pause, interval, deadline, self._timed_out)
            time.sleep(pause)

    async def aget(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
        **options: Any,
    ) -> Any:
        """Async twin of :meth:`get`."""
        self._check_get(disable_sync_subtasks, options)
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = _FIRST_POLL
        while True:
            job = await self.ajob()
            done = _finished(job, propagate)
            if done is not _NOT_DONE:
                return done
            pause = _next_pause(pause, interval, deadline, self._timed_out)
            await asyncio.sleep(pause)

    def wait(self, timeout: float | None = None, propagate: bool = True, **options: Any) -> Any:
        """Same as :meth:`get`."""
        return self.get(timeout=timeout, propagate=propagate, **options)

    def _check_get(self, disable_sync_subtasks: bool, options: dict[str, Any]) -> None:
        for option in options:
            if option not in ("no_ack", "follow_parents"):
                raise TypeError(
                    f"AsyncResult.get option {option!r} is not supported by dispatch_celery"
                )
        if disable_sync_subtasks and current_job() is not None:
            raise RuntimeError(
                "Never call result.get() within a task: a worker slot waiting for another job "
                "can deadlock the cluster (pass disable_sync_subtasks=False to do it anyway)"
            )

    def _timed_out(self) -> TimeoutError:
        return TimeoutError(f"task {self.id} did not finish in time: the operation timed out")

    # -- control ----------------------------------------------------------------------------------

    def revoke(
        self,
        connection: Any = None,
        terminate: bool = False,
        signal: Any = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Cancel the task: a waiting job never runs; a running one is stopped at its
        worker's next heartbeat and its outcome discarded (``terminate`` is implied). A
        finished or unknown task is left as it is, as in Celery.

        Raises:
            TypeError: ``signal`` or ``connection`` given (Dispatch has no signals to send).
        """
        if signal is not None or connection is not None:
            name = "signal" if signal is not None else "connection"
            raise TypeError(
                f"AsyncResult.revoke option {name!r} is not supported by dispatch_celery"
            )
        with contextlib.suppress(JobNotFoundError, InvalidTransitionError):
            self.app._get_engine().cancel(self.id)

    def forget(self) -> None:
        """Not supported: finished jobs are deleted by the engine's retention
        (``app.conf.result_expires``). Raises :class:`TypeError`."""
        raise TypeError(
            "AsyncResult.forget() is not supported by dispatch_celery: finished jobs are "
            "deleted by retention (app.conf.result_expires)"
        )


class EagerResult(AsyncResult):
    """The result of a task run in eager mode (``task_always_eager`` or ``task.apply()``):
    already finished, held in memory, never in a store."""

    def __init__(
        self,
        id: str,
        *,
        value: Any = None,
        exc: BaseException | None = None,
        retries: int = 0,
        name: str | None = None,
    ) -> None:
        super().__init__(id)
        self._value = value
        self._exc = exc
        self._retries = retries
        self._name = name
        self._traceback = (
            "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
            if exc is not None
            else None
        )

    def job(self) -> Job | None:
        """Always ``None``: an eager task has no job."""
        return None

    async def ajob(self) -> Job | None:
        """Always ``None``: an eager task has no job."""
        return None

    @property
    def state(self) -> str:
        return states.FAILURE if self._exc is not None else states.SUCCESS

    @property
    def result(self) -> Any:
        return self._exc if self._exc is not None else self._value

    @property
    def traceback(self) -> str | None:
        return self._traceback

    @property
    def retries(self) -> int:
        return self._retries

    @property
    def name(self) -> str | None:
        return self._name

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
        **options: Any,
    ) -> Any:
        if self._exc is not None and propagate:
            raise self._exc
        return self.result

    async def aget(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
        **options: Any,
    ) -> Any:
        return self.get(timeout=timeout, propagate=propagate)

    def revoke(
        self,
        connection: Any = None,
        terminate: bool = False,
        signal: Any = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Nothing to revoke: an eager task has already run."""


# -- helpers ---------------------------------------------------------------------------------------

_NOT_DONE: Any = object()


def _state_of(job: Job | None) -> str:
    return states.PENDING if job is None else states.from_job_state(job.state)


def _value_of(job: Job | None) -> Any:
    state = _state_of(job)
    if job is None:
        return None
    if state == states.SUCCESS:
        return job.result
    if state in (states.FAILURE, states.RETRY):
        return rebuild_exception(job.last_error)
    if state == states.REVOKED:
        return TaskRevokedError(f"task {job.id} was revoked")
    return None


def _finished(job: Job | None, propagate: bool) -> Any:
    """The value ``get()`` returns for ``job``, or ``_NOT_DONE``; raises when it must."""
    state = _state_of(job)
    if state not in states.READY_STATES:
        return _NOT_DONE
    value = _value_of(job)
    if propagate and state in states.PROPAGATE_STATES:
        raise value
    return value


def _next_pause(
    pause: float,
    interval: float,
    deadline: float | None,
    timed_out: Callable[[], BaseException],
) -> float:
    pause = min(pause * 2, interval)
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise timed_out()
        pause = min(pause, left)
    return pause


def _payload_part(job: Job | None, key: str) -> Any:
    if job is None or not isinstance(job.payload, dict):
        return None
    return job.payload.get(key)
