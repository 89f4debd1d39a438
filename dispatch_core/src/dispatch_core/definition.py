"""Job definitions: what ``@engine.job`` returns."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import typing
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Unpack

from dispatch_core.backoff import Backoff
from dispatch_core.context import JobContext
from dispatch_core.errors import ConfigurationError
from dispatch_core.models import Job
from dispatch_core.producer import EnqueueOptions

if TYPE_CHECKING:
    from dispatch_core.engine import Engine

__all__ = ["JobDefinition", "inspect_handler"]

P = TypeVar("P")

_NO_PAYLOAD: Any = object()


def inspect_handler(fn: Callable[..., Any]) -> tuple[int | None, bool, Any]:
    """Return ``(ctx_position, takes_payload, payload_type)`` for a handler.

    A handler takes at most one payload parameter plus, optionally, one parameter annotated
    :class:`JobContext` (in either position). An unannotated payload is any JSON value.
    """
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise ConfigurationError(f"cannot resolve the type hints of {fn!r}: {exc}") from exc
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    ctx_position: int | None = None
    payload_params = []
    for i, p in enumerate(params):
        if hints.get(p.name) is JobContext:
            ctx_position = i
        else:
            payload_params.append(p)
    if len(payload_params) > 1:
        names = ", ".join(p.name for p in payload_params)
        raise ConfigurationError(
            f"job handler {fn.__qualname__} takes several payload parameters ({names}); a job "
            "takes one payload (an attrs class, a dataclass or a JSON type) and optionally a "
            "JobContext"
        )
    if not payload_params:
        return ctx_position, False, None
    return ctx_position, True, hints.get(payload_params[0].name, Any)


class JobDefinition(Generic[P]):
    """A registered job: its handler, its defaults and its enqueue methods.

    Calling the definition calls the handler directly (handy in tests); ``enqueue`` /
    ``aenqueue`` put a job in the store for a worker.

    Attributes:
        internal: The job belongs to the engine or a plugin (the workflow driver, webhook
            deliveries): in-process code enqueues it, the admin API never does, for any token.
        operator_only: Only operators may enqueue it from outside: the admin API refuses it
            to tokens bound to a tenant.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        fn: Callable[..., Any],
        name: str,
        queue: str,
        max_retries: int,
        timeout: float | None,
        priority: int,
        backoff: Backoff | None,
        aliases: Iterable[str] = (),
        internal: bool = False,
        operator_only: bool = False,
    ) -> None:
        if max_retries < 0:
            raise ConfigurationError(f"job {name!r}: max_retries must be >= 0, got {max_retries}")
        if timeout is not None and timeout <= 0:
            raise ConfigurationError(f"job {name!r}: timeout must be > 0 seconds or None")
        self.engine = engine
        self.fn = fn
        self.name = name
        self.queue = queue
        self.max_retries = max_retries
        self.timeout = timeout
        self.priority = priority
        self.backoff = backoff
        self.aliases = tuple(aliases)
        self.internal = bool(internal)
        self.operator_only = bool(operator_only)
        self.is_async = inspect.iscoroutinefunction(fn)
        self._ctx_position, self.takes_payload, self.payload_type = inspect_handler(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)
        self.__qualname__ = getattr(fn, "__qualname__", name)
        self.__module__ = getattr(fn, "__module__", __name__)

    def __repr__(self) -> str:
        return f"<JobDefinition {self.name!r} queue={self.queue!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    # -- enqueue -----------------------------------------------------------------------------------

    def enqueue(
        self,
        payload: P = _NO_PAYLOAD,
        *,
        conn: Any = None,
        **options: Unpack[EnqueueOptions],
    ) -> Job:
        """Enqueue one job from synchronous code and return it as stored.

        Args:
            payload: The payload; validated against the handler's type.
            conn: The caller's open database connection: the job is written in the caller's
                transaction, so a rollback leaves no job (SQL stores only).
            **options: :class:`~dispatch_core.producer.EnqueueOptions`, each defaulting to
                the definition's: ``queue``, ``priority`` (higher runs first), ``run_at`` (a
                timezone-aware time) or ``delay`` (seconds or a timedelta from now),
                ``max_retries``, ``timeout``, ``unique_key`` (idempotency key within the
                job's tenant: a second enqueue with it returns the first job while that job
                is stored), ``tenant`` (default: the :func:`~dispatch_core.tenant_scope` in
                force, else the running job's), ``headers`` (string metadata: trace
                context...), ``job_id`` (the job's id, chosen by the caller: enqueueing it
                again returns the job, and an id another tenant's job holds raises
                :class:`~dispatch_core.errors.JobIdTakenError`).

        Raises:
            PayloadError: the payload does not fit; nothing was written.
            SyncInAsyncContextError: called inside a running event loop; use ``aenqueue``.
            ConfigurationError: ``conn`` was given to a store that cannot use it.
            ValueError: the job would run before 1970-01-01 or from 2200-01-01 (UTC), or
                ``delay`` is not a finite number; nothing was written.
            TypeError: an option that is not an enqueue option.
        """
        return self.engine.enqueue(self, payload, conn=conn, **options)

    async def aenqueue(
        self,
        payload: P = _NO_PAYLOAD,
        *,
        conn: Any = None,
        **options: Unpack[EnqueueOptions],
    ) -> Job:
        """Async twin of :meth:`enqueue`; ``conn`` enqueues in a caller's SQL transaction
        where the store supports it."""
        return await self.engine.aenqueue(self, payload, conn=conn, **options)

    def enqueue_many(self, payloads: Iterable[P], **options: Unpack[EnqueueOptions]) -> list[Job]:
        """Enqueue many jobs in one store transaction (sync). Options as for :meth:`enqueue`,
        applied to every job. All payloads are validated before anything is written."""
        return self.engine.enqueue_many(self, payloads, **options)

    async def aenqueue_many(
        self, payloads: Iterable[P], **options: Unpack[EnqueueOptions]
    ) -> list[Job]:
        """Async twin of :meth:`enqueue_many`."""
        return await self.engine.aenqueue_many(self, payloads, **options)

    # -- execution -------------------------------------------------------------------------------

    async def _invoke(self, ctx: JobContext, payload: Any, executor: Executor) -> Any:
        args: list[Any] = [payload] if self.takes_payload else []
        if self._ctx_position is not None:
            args.insert(self._ctx_position, ctx)
        if self.is_async:
            return await self.fn(*args)
        # Sync handlers run in the worker's bounded pool, with the job's context variables.
        call = functools.partial(contextvars.copy_context().run, self.fn, *args)
        return await asyncio.get_running_loop().run_in_executor(executor, call)
