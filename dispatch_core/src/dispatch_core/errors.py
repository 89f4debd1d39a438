"""The exceptions Dispatch raises.

Every error a user can meet derives from :class:`DispatchError`, so ``except DispatchError``
catches them all. Messages say what was wrong and where. Errors of a topic live beside it and
derive from it too: the workflow errors in :mod:`dispatch_core.workflows.errors`,
:class:`~dispatch_core.middleware.HandlerCrashedError` in :mod:`dispatch_core.middleware`.
"""

from __future__ import annotations

__all__ = [
    "DispatchError",
    "ConfigurationError",
    "StoreURLError",
    "PluginMissingError",
    "StoreUnavailableError",
    "PayloadError",
    "ResultError",
    "UnknownJobError",
    "JobIdTakenError",
    "NotFoundError",
    "JobNotFoundError",
    "DLQEntryNotFoundError",
    "InvalidTransitionError",
    "SyncInAsyncContextError",
    "JobTimeoutError",
    "RetryJob",
    "FailJob",
    "RunNotFoundError",
    "CronNotFoundError",
    "CronExpressionError",
]


class DispatchError(Exception):
    """Base class of every Dispatch error."""


class ConfigurationError(DispatchError):
    """The engine or a worker was configured with values that cannot work."""


class StoreURLError(ConfigurationError):
    """A store URL could not be parsed or names a scheme no installed plugin provides."""


class PluginMissingError(StoreURLError):
    """A store URL names a known scheme whose plugin distribution is not installed."""

    def __init__(self, scheme: str, package: str) -> None:
        super().__init__(
            f"store URL scheme {scheme!r} needs the {package} plugin, which is not installed; "
            f"install it with: pip install {package}"
        )
        self.scheme = scheme
        self.package = package


class StoreUnavailableError(DispatchError):
    """The store cannot be reached, opened or read (missing file, refused connection...)."""


class PayloadError(DispatchError, ValueError):
    """A payload does not fit the type its job declares; nothing was written."""

    def __init__(self, job_name: str, problems: list[str]) -> None:
        detail = "; ".join(problems)
        super().__init__(f"invalid payload for job {job_name!r}: {detail}")
        self.job_name = job_name
        self.problems = problems


class ResultError(DispatchError, ValueError):
    """A job's result (or outcome) cannot be stored: it is not JSON, holds a lone surrogate,
    is larger than the worker's ``max_result_bytes``, or the store refused it.

    The attempt is recorded as a failure with this error, and the job is dead-lettered at
    once: its handler ran to the end, and running it again would repeat its side effects to
    produce the same result.
    """

    def __init__(self, job_id: str, problem: str) -> None:
        super().__init__(f"result of job {job_id} is not storable: {problem}")
        self.job_id = job_id
        self.problem = problem


class UnknownJobError(DispatchError, LookupError):
    """A job name is not registered with the engine."""

    def __init__(self, name: str, known: list[str]) -> None:
        listed = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown job {name!r}; registered jobs: {listed}")
        self.name = name


class JobIdTakenError(DispatchError, ValueError):
    """A job to enqueue has the id of a stored job it does not dedupe with: a chosen id
    (``job_id=``) that a job of another tenant already has. Ids are global, unlike unique
    keys, so the job cannot be written; nothing of the enqueue was."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job id {job_id!r} is already taken by another job; choose another")
        self.job_id = job_id


class NotFoundError(DispatchError, LookupError):
    """A record asked for by id does not exist in the store."""


class JobNotFoundError(NotFoundError):
    """No job has the given id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found")
        self.job_id = job_id


class DLQEntryNotFoundError(NotFoundError):
    """No dead-letter entry has the given id."""

    def __init__(self, entry_id: str) -> None:
        super().__init__(f"dead-letter entry {entry_id!r} not found")
        self.entry_id = entry_id


class InvalidTransitionError(DispatchError):
    """A state change the job state machine does not allow was asked for."""

    def __init__(self, job_id: str, current: str, target: str, why: str = "") -> None:
        msg = f"job {job_id!r} cannot go from {current!r} to {target!r}"
        super().__init__(f"{msg}: {why}" if why else msg)
        self.job_id = job_id
        self.current = current
        self.target = target


class SyncInAsyncContextError(DispatchError, RuntimeError):
    """A blocking (sync) API was called from inside a running event loop."""

    def __init__(self, method: str, twin: str) -> None:
        super().__init__(
            f"{method}() blocks and cannot be called from a running event loop; "
            f"use 'await {twin}(...)' instead"
        )


class JobTimeoutError(DispatchError, TimeoutError):
    """A job ran longer than its timeout and was stopped."""


class RetryJob(DispatchError):
    """Raised by a handler to ask for another attempt, after ``delay`` seconds.

    The attempt counts as failed (with ``cause`` or this error as its error) and the job is
    retried after ``delay`` instead of its backoff; a job with no attempt left is
    dead-lettered as usual. ``raise RetryJob(delay=30) from exc`` keeps the cause.

    Args:
        delay: Seconds until the next attempt (``None``: the job's backoff decides).
        reason: A short message recorded as the attempt's error when there is no cause.
    """

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        if delay is not None and delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        super().__init__(reason)
        self.delay = delay


class FailJob(DispatchError):
    """Raised by a handler to fail the job now, whatever attempts it has left.

    The job is failed and dead-lettered at once, with ``cause`` (``raise FailJob() from exc``)
    or this error as its error: for errors that no retry can mend (a bad input, a refused
    payment).

    Args:
        reason: A short message recorded as the error when there is no cause.
    """

    def __init__(self, reason: str = "failed for good") -> None:
        super().__init__(reason)


class RunNotFoundError(NotFoundError):
    """No workflow run has the given id (in the caller's tenant)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"workflow run {run_id!r} not found")
        self.run_id = run_id


class CronNotFoundError(NotFoundError):
    """No cron entry has the given name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"cron entry {name!r} not found")
        self.name = name


class CronExpressionError(ConfigurationError, ValueError):
    """A cron expression or its timezone cannot be parsed."""

    def __init__(self, expr: str, reason: str) -> None:
        super().__init__(f"bad cron expression {expr!r}: {reason}")
        self.expr = expr
        self.reason = reason
