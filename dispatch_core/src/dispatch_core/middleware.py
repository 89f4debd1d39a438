"""Job middleware: code wrapped around every handler call, outermost first.

A middleware is ``async def mw(ctx: JobContext, call_next) -> result``: it may act before and
after ``await call_next(ctx)``, or short-circuit. The default chain, outermost first, is
Recover -> Tracing -> Metrics -> Logging -> Scope -> Timeout -> user middleware -> handler
(Tracing and Metrics come from dispatch-otel).

Workflows have two more kinds, for plugins that follow a run (tracing): *run middleware* wraps
each drive of a run (one worker taking it as far as it goes, until it completes, fails or
parks) and *step middleware* wraps each attempt of a step. Both are
``async def mw(call, call_next)`` too, with a :class:`RunCall` or :class:`StepCall`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from dispatch_core.context import JobContext, _current_ctx
from dispatch_core.errors import DispatchError, JobTimeoutError

if TYPE_CHECKING:
    from dispatch_core.workflows.models import WorkflowRun

__all__ = [
    "CallNext",
    "Middleware",
    "MiddlewareRegistry",
    "build_chain",
    "RECOVER",
    "TRACING",
    "METRICS",
    "LOGGING",
    "SCOPE",
    "TIMEOUT",
    "USER",
    "recover_middleware",
    "logging_middleware",
    "scope_middleware",
    "timeout_middleware",
    "HandlerCrashedError",
    "RunCall",
    "StepCall",
    "DriveOutcome",
    "DriveResult",
    "RunMiddleware",
    "StepMiddleware",
]

CallNext = Callable[[JobContext], Awaitable[Any]]
Middleware = Callable[[JobContext, CallNext], Awaitable[Any]]


class DriveOutcome(enum.StrEnum):
    """How one drive of a workflow run ended."""

    COMPLETED = "completed"
    FAILED = "failed"
    #: Parked: sleeping, waiting for an event or a child; another drive takes it on.
    SUSPENDED = "suspended"
    CANCELLED = "cancelled"


@attrs.frozen(kw_only=True)
class DriveResult:
    """What run middleware's ``call_next`` returns (it never raises for the run's own
    failure: that is ``outcome=FAILED`` with the exception)."""

    outcome: DriveOutcome
    #: The formatted error of a failed run.
    error: str | None = None
    exception: BaseException | None = None


@attrs.frozen(kw_only=True)
class RunCall:
    """One drive of a workflow run, as run middleware sees it."""

    run: WorkflowRun
    #: The driver job's context (``ctx.job.headers`` hold what the producer stamped).
    ctx: JobContext


@attrs.frozen(kw_only=True)
class StepCall:
    """One attempt of a workflow step, as step middleware sees it."""

    run: WorkflowRun
    #: The step's name, unique within the run.
    name: str
    #: 1 for the first attempt of the step (its ``retry`` policy may allow more).
    attempt: int
    ctx: JobContext


RunMiddleware = Callable[
    [RunCall, Callable[[RunCall], Awaitable[DriveResult]]], Awaitable[DriveResult]
]
StepMiddleware = Callable[[StepCall, Callable[[StepCall], Awaitable[Any]]], Awaitable[Any]]

M = TypeVar("M")

#: Positions in the chain; lower runs outside higher.
RECOVER, TRACING, METRICS, LOGGING, SCOPE, TIMEOUT, USER = 100, 200, 300, 400, 500, 600, 700

log = logging.getLogger("dispatch_core.worker")


class HandlerCrashedError(DispatchError):
    """A handler raised a ``BaseException`` that is not an ``Exception`` (``SystemExit``...)."""


class _Ordered(Generic[M]):
    """Named entries kept in order of position, then of addition; a name added again is
    replaced (and goes after the others at its position). The order is worked out once per
    change, not per use."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, int, M]] = {}
        self._added = 0
        self._sorted: list[tuple[str, M]] | None = None

    def add(self, name: str, item: M, order: int) -> None:
        self._entries.pop(name, None)
        self._entries[name] = (order, self._added, item)
        self._added += 1
        self._sorted = None

    def items(self) -> list[tuple[str, M]]:
        if self._sorted is None:
            ranked = sorted(self._entries.items(), key=lambda e: e[1][:2])
            self._sorted = [(name, entry[2]) for name, entry in ranked]
        return self._sorted


class MiddlewareRegistry:
    """Collects middleware from plugins and the user, then orders it."""

    def __init__(self) -> None:
        self._jobs: _Ordered[Middleware] = _Ordered()
        self._run: _Ordered[RunMiddleware] = _Ordered()
        self._step: _Ordered[StepMiddleware] = _Ordered()

    def add(self, name: str, middleware: Middleware, *, order: int = USER) -> None:
        """Add ``middleware`` at position ``order`` (see the module constants).

        A name already present is replaced, so a plugin can swap a built-in.
        """
        self._jobs.add(name, middleware, order)

    def add_run(self, name: str, middleware: RunMiddleware, *, order: int = USER) -> None:
        """Add run middleware (around each drive of a workflow run); a name already present
        is replaced."""
        self._run.add(name, middleware, order)

    def add_step(self, name: str, middleware: StepMiddleware, *, order: int = USER) -> None:
        """Add step middleware (around each attempt of a workflow step); a name already
        present is replaced."""
        self._step.add(name, middleware, order)

    def names(self) -> list[str]:
        """Middleware names, outermost first."""
        return [name for name, _ in self._jobs.items()]

    def run_middleware(self) -> list[RunMiddleware]:
        """Run middleware, outermost first."""
        return [mw for _, mw in self._run.items()]

    def step_middleware(self) -> list[StepMiddleware]:
        """Step middleware, outermost first."""
        return [mw for _, mw in self._step.items()]

    def ordered(self) -> list[Middleware]:
        """Middleware, outermost first."""
        return [mw for _, mw in self._jobs.items()]

    def for_chain(self) -> list[Middleware]:
        """:meth:`ordered`, with the four built-ins fused into one frame when they sit
        together unchanged (no plugin between them): same behaviour, a third of the cost."""
        items = self._jobs.items()
        for start in range(len(items) - len(_BUILTINS) + 1):
            if items[start : start + len(_BUILTINS)] == _BUILTINS:
                middleware = [mw for _, mw in items]
                middleware[start : start + len(_BUILTINS)] = [builtin_middleware]
                return middleware
        return [mw for _, mw in items]


def build_chain(middleware: Sequence[Middleware], handler: CallNext) -> CallNext:
    """Compose ``middleware`` (outermost first) around ``handler`` once, not per job."""
    call: CallNext = handler
    for mw in reversed(middleware):
        call = _bind(mw, call)
    return call


def _bind(
    mw: Callable[[Any, Any], Awaitable[Any]], nxt: Callable[[Any], Awaitable[Any]]
) -> Callable[[Any], Awaitable[Any]]:
    # A plain function returning the middleware's coroutine: no extra frame per layer.
    return lambda call: mw(call, nxt)


def wrap_call(
    middleware: Sequence[Callable[[Any, Any], Awaitable[Any]]],
    call: Any,
    inner: Callable[[Any], Awaitable[Any]],
) -> Awaitable[Any]:
    """Run ``inner(call)`` inside run or step ``middleware`` (outermost first)."""
    nxt = inner
    for mw in reversed(middleware):
        nxt = _bind(mw, nxt)
    return nxt(call)


async def recover_middleware(ctx: JobContext, call_next: CallNext) -> Any:
    """Turn a ``BaseException`` escaping the handler (``SystemExit``...) into an ordinary
    failure, so a handler can never take the worker down."""
    try:
        return await call_next(ctx)
    except (Exception, asyncio.CancelledError, KeyboardInterrupt):
        raise
    except BaseException as exc:
        raise HandlerCrashedError(f"job {ctx.name} raised {exc!r}") from exc


async def logging_middleware(ctx: JobContext, call_next: CallNext) -> Any:
    """Log the start and end of each attempt at DEBUG, with the job's fields.

    Failures are logged by the worker, which decides what follows them: a retry at INFO,
    a dead letter at WARNING with the traceback.
    """
    if not log.isEnabledFor(logging.DEBUG):
        return await call_next(ctx)
    t0 = time.perf_counter()
    ctx.log.debug("job %s attempt %d started", ctx.name, ctx.attempt)
    result = await call_next(ctx)
    ctx.log.debug("job %s completed in %.1f ms", ctx.name, (time.perf_counter() - t0) * 1e3)
    return result


async def scope_middleware(ctx: JobContext, call_next: CallNext) -> Any:
    """Make the job and its tenant current, so jobs it enqueues inherit the tenant."""
    token = _current_ctx.set(ctx)
    try:
        return await call_next(ctx)
    finally:
        _current_ctx.reset(token)


async def timeout_middleware(ctx: JobContext, call_next: CallNext) -> Any:
    """Stop the attempt after ``job.timeout`` seconds with :class:`JobTimeoutError`.

    The middleware sets the deadline; the worker's watchdog cancels the task once it passes
    (one periodic check for all jobs is cheaper than a timer per job). A sync handler's
    thread cannot be killed: its attempt is marked timed out and the thread is left to end.
    """
    limit = ctx.job.timeout
    if limit is None:
        return await call_next(ctx)
    ctx._deadline = time.monotonic() + limit
    try:
        return await call_next(ctx)
    except asyncio.CancelledError:
        if ctx._timed_out:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            raise JobTimeoutError(f"job {ctx.name} timed out after {limit:g}s") from None
        raise
    finally:
        ctx._deadline = None


async def builtin_middleware(ctx: JobContext, call_next: CallNext) -> Any:
    """Recover, Logging, Scope and Timeout in one frame (see each for what it does)."""
    token = _current_ctx.set(ctx)
    limit = ctx.job.timeout
    if limit is not None:
        ctx._deadline = time.monotonic() + limit
    debug = log.isEnabledFor(logging.DEBUG)
    if debug:
        t0 = time.perf_counter()
        ctx.log.debug("job %s attempt %d started", ctx.name, ctx.attempt)
    try:
        result = await call_next(ctx)
    except asyncio.CancelledError:
        if not ctx._timed_out:
            raise
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        raise JobTimeoutError(f"job {ctx.name} timed out after {limit:g}s") from None
    except (Exception, KeyboardInterrupt):
        raise  # failures are logged by the worker, which decides between retry and DLQ
    except BaseException as exc:
        raise HandlerCrashedError(f"job {ctx.name} raised {exc!r}") from exc
    finally:
        ctx._deadline = None
        _current_ctx.reset(token)
    if debug:
        ctx.log.debug("job %s completed in %.1f ms", ctx.name, (time.perf_counter() - t0) * 1e3)
    return result


_BUILTINS: list[tuple[str, Middleware]] = [
    ("recover", recover_middleware),
    ("logging", logging_middleware),
    ("scope", scope_middleware),
    ("timeout", timeout_middleware),
]
