"""What ``@dispatch.job`` returns: a job declared before any app, bound to each app's engine.

A :class:`FlaskJob` is made at import time, when no app exists yet. Each app the extension is
initialized on registers the handler on its own :class:`~dispatch_core.Engine`; ``enqueue``
picks the engine of ``current_app`` (or of the only app, outside an app context).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Unpack

from flask import Flask

from dispatch_core import EnqueueOptions, Job, JobDefinition, current_job

if TYPE_CHECKING:
    from dispatch_flask.extension import Dispatch

__all__ = ["FlaskJob"]

P = TypeVar("P")

# Stands for "no payload given", so a job without a payload is enqueued as ``job.enqueue()``.
_MISSING: Any = object()


class FlaskJob(Generic[P]):
    """A job declared with ``@dispatch.job`` (or ``@dispatch.cron``) on a :class:`Dispatch`.

    It enqueues through the engine of the current app: ``current_app`` inside a request, a
    CLI command or a job, else the only app the extension is initialized on. Calling it calls
    the handler directly (handy in tests).

    Attributes:
        name: The job's stable name, as stored with each job.
        fn: The handler.
    """

    def __init__(self, extension: Dispatch, fn: Callable[..., Any], name: str) -> None:
        self._extension = extension
        self.fn = fn
        self.name = name
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)
        self.__qualname__ = getattr(fn, "__qualname__", name)
        self.__module__ = getattr(fn, "__module__", __name__)

    def __repr__(self) -> str:
        return f"<FlaskJob {self.name!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def definition(self, app: Flask | None = None) -> JobDefinition[P]:
        """This job as registered on ``app``'s engine (default: the current app's).

        Raises:
            RuntimeError: no app is current and the extension is not on exactly one app, or
                the extension is not initialized on ``app``.
        """
        return self._extension._definition(self, app)

    # -- enqueue -----------------------------------------------------------------------------------

    def enqueue(
        self, payload: P = _MISSING, *, conn: Any = None, **options: Unpack[EnqueueOptions]
    ) -> Job:
        """Enqueue one job from a view or other sync code, through the app's pooled sync
        producer (no event loop is started). ``options`` are
        :class:`~dispatch_core.EnqueueOptions`, as for
        :meth:`dispatch_core.JobDefinition.enqueue`.

        Raises:
            PayloadError: the payload does not fit the handler's type; nothing was written.
            SyncInAsyncContextError: called inside a running event loop; use ``aenqueue``.
        """
        args = () if payload is _MISSING else (payload,)
        return self.definition().enqueue(*args, conn=conn, **options)

    async def aenqueue(
        self, payload: P = _MISSING, *, conn: Any = None, **options: Unpack[EnqueueOptions]
    ) -> Job:
        """Async twin of :meth:`enqueue`, for async views and async jobs.

        Flask runs each async view in an event loop of its own, so there the job is written
        through the sync producer in a thread: the engine's async store stays on the loop
        that opened it. Inside a job of the same engine (or with ``conn=``), the engine's
        async path is used.
        """
        definition = self.definition()
        args = () if payload is _MISSING else (payload,)
        running = current_job()
        if conn is not None or (running is not None and running.engine is definition.engine):
            return await definition.aenqueue(*args, conn=conn, **options)
        return await asyncio.to_thread(functools.partial(definition.enqueue, *args, **options))

    def enqueue_many(self, payloads: Iterable[P], **options: Unpack[EnqueueOptions]) -> list[Job]:
        """Enqueue many jobs in one store transaction (sync); all payloads are validated
        before anything is written. Options as for :meth:`enqueue`."""
        return self.definition().enqueue_many(payloads, **options)

    async def aenqueue_many(
        self, payloads: Iterable[P], **options: Unpack[EnqueueOptions]
    ) -> list[Job]:
        """Async twin of :meth:`enqueue_many` (see :meth:`aenqueue` for the path taken)."""
        definition = self.definition()
        running = current_job()
        if running is not None and running.engine is definition.engine:
            return await definition.aenqueue_many(payloads, **options)
        items = list(payloads)
        return await asyncio.to_thread(functools.partial(definition.enqueue_many, items, **options))
