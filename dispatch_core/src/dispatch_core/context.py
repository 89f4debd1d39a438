"""What a running job can see about itself: :class:`JobContext` and the current scope."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dispatch_core.models import Job

if TYPE_CHECKING:
    from dispatch_core.engine import Engine

__all__ = ["JobContext", "current_job", "current_tenant", "tenant_scope"]

_log = logging.getLogger("dispatch_core.job")
_current_ctx: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "dispatch_current_job", default=None
)
# A tuple so that "no scope set" (empty) differs from an explicit ``tenant_scope(None)``.
_tenant_scope: contextvars.ContextVar[tuple[str | None, ...]] = contextvars.ContextVar(
    "dispatch_tenant_scope", default=()
)


class JobLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger that stamps every record with the job's id, name, queue and attempt."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


class JobContext:
    """Handed to a handler that asks for it (a parameter annotated ``JobContext``).

    Attributes:
        job: The job as claimed (state ``running``, with its lease).
        engine: The engine running it.
        worker_id: The worker running it.
    """

    __slots__ = (
        "_cancel",
        "_deadline",
        "_log",
        "_started",
        "_timed_out",
        "engine",
        "job",
        "worker_id",
    )

    def __init__(self, job: Job, engine: Engine, worker_id: str) -> None:
        self.job = job
        self.engine = engine
        self.worker_id = worker_id
        self._log: JobLogger | None = None
        self._cancel: threading.Event | None = None
        #: monotonic() time after which the worker's watchdog stops the attempt.
        self._deadline: float | None = None
        self._timed_out = False
        #: Set (under the worker's start lock) when the attempt begins to run.
        self._started = False

    @property
    def id(self) -> str:
        """The job id."""
        return self.job.id

    @property
    def name(self) -> str:
        """The job name."""
        return self.job.name

    @property
    def attempt(self) -> int:
        """This attempt's number, from 1."""
        return self.job.attempt

    @property
    def tenant(self) -> str | None:
        """The tenant scope the job was enqueued under."""
        return self.job.tenant

    @property
    def log(self) -> logging.LoggerAdapter:  # type: ignore[type-arg]
        """A logger whose records carry ``job_id``, ``job_name``, ``queue`` and ``attempt``."""
        if self._log is None:
            j = self.job
            self._log = JobLogger(
                _log,
                {"job_id": j.id, "job_name": j.name, "queue": j.queue, "attempt": j.attempt},
            )
        return self._log

    @property
    def cancelled(self) -> bool:
        """True once the attempt should stop (cancelled, lease lost, timed out, shutdown).

        Async handlers are cancelled for real; sync handlers in threads should poll this.
        """
        return self._cancel is not None and self._cancel.is_set()

    def _request_cancel(self) -> None:
        if self._cancel is None:
            self._cancel = threading.Event()
        self._cancel.set()


def current_job() -> JobContext | None:
    """The context of the job running in this task or thread, if any."""
    return _current_ctx.get()


def current_tenant() -> str | None:
    """The tenant scope in force: the innermost :func:`tenant_scope`, else the running job's
    tenant, else ``None``."""
    scope = _tenant_scope.get()
    if scope:
        return scope[0]
    ctx = _current_ctx.get()
    return ctx.job.tenant if ctx is not None else None


@contextlib.contextmanager
def tenant_scope(tenant: str | None) -> Iterator[None]:
    """Make ``tenant`` the scope of what is enqueued or started inside the block.

    Jobs and workflow runs created in the block without an explicit ``tenant=`` get this
    tenant, and the handlers that run them see it as ``ctx.tenant`` (and as
    :func:`current_tenant`, so the jobs they enqueue inherit it). The admin API wraps each
    request of a tenant-bound token in it. ``tenant_scope(None)`` clears an outer scope.

    Args:
        tenant: The tenant, or ``None`` for no tenant.

    Example:
        >>> with tenant_scope("acme"):
        ...     send_welcome.enqueue(Welcome(user_id=1, email="a@example.com"))
    """
    token = _tenant_scope.set((tenant,))
    try:
        yield
    finally:
        _tenant_scope.reset(token)
