"""A Celery-style API over Dispatch: ``@app.task``, ``delay``, ``apply_async``,
``AsyncResult``, ``self.retry`` and ``beat_schedule``, for projects leaving Celery.

Change ``from celery import Celery`` into ``from dispatch_celery import Celery`` (and
``celery.schedules`` into ``dispatch_celery.schedules``...), point the app at a Dispatch store,
and run workers with ``dispatch worker tasks:app.engine``. What Dispatch cannot do the Celery
way (canvas, exchanges, routing keys, pickle, result backends) raises :class:`TypeError`
naming it. See ``docs/adapters/celery.md`` and ``docs/migrating-from-celery.md``.
"""

from __future__ import annotations

from dispatch_celery import states
from dispatch_celery.app import Celery, current_app, shared_task
from dispatch_celery.canvas import chain, chord, chunks, group, signature, xmap, xstarmap
from dispatch_celery.exceptions import (
    EncodeError,
    MaxRetriesExceededError,
    Retry,
    TaskFailedError,
    TaskRevokedError,
)
from dispatch_celery.result import AsyncResult, EagerResult
from dispatch_celery.schedules import crontab
from dispatch_celery.task import Request, Task

__all__ = [
    # the app and its tasks
    "Celery",
    "Task",
    "Request",
    "shared_task",
    "current_app",
    # results
    "AsyncResult",
    "EagerResult",
    "states",
    # periodic tasks
    "crontab",
    # errors
    "Retry",
    "MaxRetriesExceededError",
    "TaskRevokedError",
    "TaskFailedError",
    "EncodeError",
    # canvas: present to fail clearly when called
    "group",
    "chain",
    "chord",
    "signature",
    "chunks",
    "xmap",
    "xstarmap",
]
