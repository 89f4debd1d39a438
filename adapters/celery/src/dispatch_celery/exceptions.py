"""The exceptions of the Celery-style API (Celery's ``celery.exceptions`` names)."""

from __future__ import annotations

import builtins

from dispatch_core import PayloadError

__all__ = [
    "Retry",
    "MaxRetriesExceededError",
    "TimeoutError",
    "TaskRevokedError",
    "TaskFailedError",
    "EncodeError",
]


class Retry(Exception):  # Celery's name
    """Raised by :meth:`Task.retry <dispatch_celery.Task.retry>`: the attempt ends and the
    job runs again after ``when`` seconds.

    Attributes:
        exc: The exception that caused the retry, if any.
        when: Seconds until the next attempt.
    """

    def __init__(
        self, message: str | None = None, exc: BaseException | None = None, when: float = 0.0
    ) -> None:
        self.exc = exc
        self.when = when
        super().__init__(message or self._describe())

    def _describe(self) -> str:
        cause = f": {self.exc!r}" if self.exc is not None else ""
        return f"Retry in {self.when:g}s{cause}"


class MaxRetriesExceededError(Exception):
    """``self.retry()`` was called with no retry left and no ``exc`` to re-raise."""


class TimeoutError(builtins.TimeoutError):  # Celery's name; still a builtin TimeoutError
    """:meth:`AsyncResult.get <dispatch_celery.AsyncResult.get>` waited longer than its
    ``timeout``."""


class TaskRevokedError(Exception):
    """The task was revoked (cancelled, or expired before it started)."""


class TaskFailedError(Exception):
    """A task failed with an exception that cannot be rebuilt in this process.

    :meth:`AsyncResult.get <dispatch_celery.AsyncResult.get>` re-raises a failed task's
    exception when its type is a built-in one or a class importable from a module already
    imported here; otherwise it raises this error, which carries what the worker recorded.

    Attributes:
        exc_type: The qualified name of the original exception type.
        exc_message: The original exception's message.
        traceback: The error text the worker recorded (message and traceback).
    """

    def __init__(self, exc_type: str, exc_message: str, traceback: str) -> None:
        super().__init__(f"{exc_type}: {exc_message}" if exc_message else exc_type)
        self.exc_type = exc_type
        self.exc_message = exc_message
        self.traceback = traceback


class EncodeError(PayloadError):
    """A task argument (or a beat entry's argument) is not JSON: nothing was enqueued.

    dispatch_celery sends arguments as JSON, like Celery's default serializer; pickle is not
    supported.
    """
