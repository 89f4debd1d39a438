"""What a task's job carries: its arguments as JSON, and the calling options.

A job's payload is ``{"args": [...], "kwargs": {...}}``, plus ``"expires"`` (an ISO time) or
``"expires_in"`` (seconds after the job was created) when the task may not start after a
deadline. Arguments are checked at enqueue: a value JSON cannot hold is refused with the name
of the argument, and nothing is written.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from dispatch_celery.exceptions import EncodeError

__all__ = [
    "Message",
    "CallOptions",
    "encode",
    "decode",
    "json_problem",
    "call_options",
    "aware",
]

_SCALARS = (str, int, float, bool, type(None))


def json_problem(value: Any, path: str) -> str | None:
    """Where and why ``value`` is not JSON, or ``None`` when it is.

    Lists and tuples become JSON arrays; dicts need string keys.
    """
    if isinstance(value, _SCALARS):
        if isinstance(value, float) and not math.isfinite(value):
            return f"{path} is {value!r}, which JSON cannot hold"
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            problem = json_problem(item, f"{path}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has the key {key!r}, not a string; JSON keys are strings"
            problem = json_problem(item, f"{path}[{key!r}]")
            if problem:
                return problem
        return None
    return f"{path} is a {type(value).__name__} ({_short_repr(value)}), which is not JSON"


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _to_json(value: Any) -> Any:
    """``value`` with tuples turned into lists, as a JSON round trip would."""
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


@attrs.frozen(kw_only=True)
class Message:
    """A task call as stored in a job's payload."""

    args: list[Any]
    kwargs: dict[str, Any]
    #: Do not start after this time.
    expires: datetime | None = None
    #: Do not start later than this many seconds after the job was created (beat entries).
    expires_in: float | None = None

    def payload(self) -> dict[str, Any]:
        """The JSON payload of the job."""
        body: dict[str, Any] = {"args": self.args, "kwargs": self.kwargs}
        if self.expires is not None:
            body["expires"] = self.expires.isoformat()
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return body

    def deadline(self, created_at: datetime) -> datetime | None:
        """When a job created at ``created_at`` expires, if it does."""
        if self.expires is not None:
            return self.expires
        if self.expires_in is not None:
            return created_at + timedelta(seconds=self.expires_in)
        return None


def _argument_name(signature: inspect.Signature | None, index: int) -> str:
    """``"argument 'y': "`` for positional argument ``index``, when the signature names it."""
    if signature is None:
        return ""
    params = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if index < len(params):
        return f"argument {params[index].name!r}: "
    return ""


def encode(
    task_name: str,
    args: Sequence[Any] | None,
    kwargs: Mapping[str, Any] | None,
    *,
    signature: inspect.Signature | None = None,
) -> tuple[list[Any], dict[str, Any]]:
    """Check a call's arguments and return them as JSON values.

    Args:
        task_name: For error messages.
        args: Positional arguments (a list or a tuple).
        kwargs: Keyword arguments.
        signature: The task function's signature (without ``self`` for bound tasks): the
            call is checked against it, as Celery does, and error messages name the argument.

    Raises:
        TypeError: ``args`` is not a sequence, ``kwargs`` not a mapping, or the call does not
            fit the signature.
        EncodeError: a value is not JSON; the message names the argument and the path in it.
    """
    if args is None:
        args = ()
    if kwargs is None:
        kwargs = {}
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        raise TypeError(f"task {task_name!r}: args must be a list or a tuple, got {args!r:.60}")
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"task {task_name!r}: kwargs must be a dict, got {kwargs!r:.60}")
    if signature is not None:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"task {task_name!r} called with wrong arguments: {exc}") from None
    for i, value in enumerate(args):
        problem = json_problem(value, f"args[{i}]")
        if problem:
            raise EncodeError(task_name, [_pickle_hint(_argument_name(signature, i) + problem)])
    for key, value in kwargs.items():
        if not isinstance(key, str):
            raise TypeError(f"task {task_name!r}: keyword names are strings, got {key!r}")
        problem = json_problem(value, f"kwargs[{key!r}]")
        if problem:
            raise EncodeError(task_name, [_pickle_hint(f"argument {key!r}: {problem}")])
    return _to_json(list(args)), _to_json(dict(kwargs))


def _pickle_hint(problem: str) -> str:
    return f"{problem}; dispatch_celery sends arguments as JSON (pickle is not supported)"


def decode(task_name: str, payload: Any) -> Message:
    """Read the payload of a task's job.

    Raises:
        TypeError: the payload is not a task call (a job enqueued by other means).
    """
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("args"), list)
        or not isinstance(payload.get("kwargs"), dict)
    ):
        raise TypeError(
            f"job of task {task_name!r} has the payload {payload!r:.100}; a Celery-style task "
            'takes {"args": [...], "kwargs": {...}} (enqueue it with delay or apply_async)'
        )
    expires = payload.get("expires")
    expires_in = payload.get("expires_in")
    return Message(
        args=payload["args"],
        kwargs=payload["kwargs"],
        expires=datetime.fromisoformat(expires) if isinstance(expires, str) else None,
        expires_in=float(expires_in) if isinstance(expires_in, int | float) else None,
    )


def aware(moment: datetime) -> datetime:
    """``moment`` with a timezone: a naive datetime is read as UTC, as Celery does with
    ``enable_utc`` (its default)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@attrs.frozen(kw_only=True)
class CallOptions:
    """The calling options of ``apply_async`` that Dispatch honours, checked."""

    queue: str | None = None
    priority: int | None = None
    run_at: datetime | None = None
    delay: float | None = None
    expires: datetime | None = None
    timeout: float | None = None
    headers: dict[str, str] | None = None
    #: ``task_id``: the job's id, chosen by the caller.
    job_id: str | None = None

    def enqueue_options(self) -> dict[str, Any]:
        """Keyword arguments for :meth:`dispatch_core.Engine.enqueue`."""
        options: dict[str, Any] = {"queue": self.queue, "priority": self.priority}
        if self.run_at is not None:
            options["run_at"] = self.run_at
        if self.delay is not None:
            options["delay"] = self.delay
        if self.timeout is not None:
            options["timeout"] = self.timeout
        if self.headers:
            options["headers"] = self.headers
        if self.job_id is not None:
            options["job_id"] = self.job_id
        return options


# Options of Celery's apply_async that dispatch_celery refuses, with why.
_REFUSED_OPTIONS: dict[str, str] = {
    "exchange": "kombu exchanges do not exist in Dispatch; use queue=",
    "exchange_type": "kombu exchanges do not exist in Dispatch; use queue=",
    "routing_key": "routing keys do not exist in Dispatch; use queue=",
    "link": "callbacks are canvas; use Dispatch workflows",
    "link_error": "error callbacks are canvas; use Dispatch workflows or the failed hook",
    "chain": "canvas is not supported; use Dispatch workflows",
    "chord": "canvas is not supported; use Dispatch workflows",
    "group_id": "canvas is not supported; use Dispatch workflows",
    "shadow": "a job's name is its task's name",
    "compression": "jobs are stored uncompressed",
    "retry_policy": "enqueueing is a store write; it is not retried",
    "soft_time_limit": "Dispatch has one (hard) time limit: time_limit",
}

# Options accepted because they change nothing in Dispatch, with why (documented).
_HARMLESS_OPTIONS = frozenset(
    {
        "ignore_result",  # results are kept with the job anyway
        "add_to_parent",  # no parent/child tracking; get() refuses to block inside a task
        "retry",  # the store write is not retried: it either fails loudly or succeeds
    }
)


def _refused(where: str, option: str, why: str) -> TypeError:
    return TypeError(f"{where} option {option!r} is not supported by dispatch_celery: {why}")


def call_options(
    where: str,
    *,
    countdown: float | None,
    eta: datetime | None,
    expires: float | timedelta | datetime | None,
    queue: str | None,
    priority: int | None,
    options: Mapping[str, Any],
    now: datetime,
) -> CallOptions:
    """Check ``apply_async``'s options; refuse the ones Dispatch does not support.

    Args:
        where: ``"apply_async"`` or ``"send_task"``, for messages.
        options: The other keyword arguments given.
        now: The enqueue time (relative ``expires`` counts from it).

    Raises:
        TypeError: an option is not supported (the message names it), or has a wrong type.
        ValueError: both ``countdown`` and ``eta`` were given.
    """
    timeout: float | None = None
    headers: dict[str, str] | None = None
    job_id: str | None = None
    for option, value in options.items():
        if option in _REFUSED_OPTIONS:
            raise _refused(where, option, _REFUSED_OPTIONS[option])
        if option == "serializer":
            if value != "json":
                raise _refused(where, "serializer", f"{value!r}: arguments are JSON only")
        elif option == "time_limit":
            if value is not None:
                if not isinstance(value, int | float) or value <= 0:
                    raise TypeError(f"{where}: time_limit must be seconds > 0, got {value!r}")
                timeout = float(value)
        elif option == "task_id":
            if value is not None:
                if not isinstance(value, str) or not value or any(c.isspace() for c in value):
                    raise TypeError(
                        f"{where}: task_id must be a non-empty string without spaces, got {value!r}"
                    )
                job_id = value
        elif option == "headers":
            if value and not all(
                isinstance(k, str) and isinstance(v, str) for k, v in dict(value).items()
            ):
                raise TypeError(f"{where}: headers must map strings to strings, got {value!r}")
            headers = dict(value) if value else None
        elif option not in _HARMLESS_OPTIONS:
            raise _refused(where, option, "unknown option")
    if countdown is not None and eta is not None:
        raise ValueError(f"{where}: give countdown or eta, not both")
    if countdown is not None and not isinstance(countdown, int | float):
        raise TypeError(f"{where}: countdown must be seconds, got {countdown!r}")
    if eta is not None and not isinstance(eta, datetime):
        raise TypeError(f"{where}: eta must be a datetime, got {eta!r}")
    if queue is not None and not isinstance(queue, str):
        raise TypeError(f"{where}: queue must be a queue name (str), got {queue!r}")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise TypeError(f"{where}: priority must be an int, got {priority!r}")
    deadline: datetime | None
    if expires is None or isinstance(expires, datetime):
        deadline = aware(expires) if expires is not None else None
    elif isinstance(expires, timedelta):
        deadline = now + expires
    elif isinstance(expires, int | float) and not isinstance(expires, bool):
        deadline = now + timedelta(seconds=expires)
    else:
        raise TypeError(f"{where}: expires must be seconds or a datetime, got {expires!r}")
    return CallOptions(
        queue=queue,
        priority=priority,
        run_at=aware(eta) if eta is not None else None,
        delay=max(float(countdown), 0.0) if countdown is not None else None,
        expires=deadline,
        timeout=timeout,
        headers=headers,
        job_id=job_id,
    )


def signature_of(fn: Callable[..., Any], *, bound: bool) -> inspect.Signature | None:
    """The signature calls are checked against (without ``self`` for a bound task)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    if bound:
        params = list(signature.parameters.values())[1:]
        signature = signature.replace(parameters=params)
    return signature
