"""The engine's one write path for new jobs, and the enqueue options, defined once.

Every new job, whoever makes it (``engine.enqueue``, a definition's ``enqueue``, cron, the
leader, a workflow's driver, a replayed dead letter), goes the same way:

1. :meth:`Producer.new_job` builds the :class:`~dispatch_core.models.NewJob` from a definition
   and :class:`EnqueueOptions` (the options' defaults come from the definition);
2. :meth:`Producer.scope` runs the ``dispatch_job_enqueuing`` hook around the write;
3. the store writes it;
4. :meth:`Producer.enqueued` wakes this process's workers and reports the
   ``dispatch_job_enqueued`` hook (only for committed writes).

:meth:`Producer.write` and :meth:`Producer.write_blocking` do 2-4 for callers that write
through the engine's store. ``engine.producer`` is core's internal API: the engine, cron, the
leader, workflows and the worker use it, and no module outside ``engine.py`` calls an
underscored ``Engine`` method (see ``docs/internals.md``).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict, cast

import pluggy

from dispatch_core._ids import new_id
from dispatch_core.context import current_tenant
from dispatch_core.errors import ConfigurationError
from dispatch_core.models import Job, NewJob, utcnow

if TYPE_CHECKING:
    from dispatch_core.definition import JobDefinition
    from dispatch_core.engine import Engine

__all__ = [
    "EnqueueOptions",
    "ENQUEUE_OPTIONS",
    "Producer",
    "EARLIEST_RUN_AT",
    "LATEST_RUN_AT",
    "scheduled_at",
]

log = logging.getLogger("dispatch_core.engine")


class EnqueueOptions(TypedDict, total=False):
    """The options of one enqueue, each defaulting to the job definition's.

    Attributes:
        queue: The queue to put the job in.
        priority: Higher runs first.
        run_at: When the job may run (timezone-aware); or give ``delay``.
        delay: Seconds (or a timedelta) from now until the job may run.
        max_retries: Retries after the first attempt.
        timeout: Seconds one attempt may run; ``None`` for the definition's.
        unique_key: Idempotency key, unique within the tenant: a second enqueue with it
            returns the job that holds it.
        tenant: The tenant scope (default: the one in scope, see ``tenant_scope``).
        headers: String headers carried with the job (trace context, correlation ids).
        job_id: A chosen job id (idempotent like a ``unique_key``; not with one).
    """

    queue: str | None
    priority: int | None
    run_at: datetime | None
    delay: float | timedelta | None
    max_retries: int | None
    timeout: float | None
    unique_key: str | None
    tenant: str | None
    headers: dict[str, str] | None
    job_id: str | None


#: The names of :class:`EnqueueOptions`, for adapters that pass them through.
ENQUEUE_OPTIONS: frozenset[str] = frozenset(EnqueueOptions.__annotations__)

#: The times a job may be scheduled at: every store can hold them (Redis keeps run_at as 16
#: digits of microseconds since 1970, up to 2286).
EARLIEST_RUN_AT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_RUN_AT = datetime(2200, 1, 1, tzinfo=UTC)
_JOB_ID = re.compile(r"[!-~]{1,200}")


def scheduled_at(
    now: datetime, run_at: datetime | None, delay: float | timedelta | None
) -> datetime:
    """When a job enqueued at ``now`` with ``run_at`` or ``delay`` runs.

    Raises:
        ValueError: both are given, ``run_at`` is naive, ``delay`` is not finite, or the time
            is outside ``[EARLIEST_RUN_AT, LATEST_RUN_AT)`` (a job stored there would stall
            the claims of its queue on some stores, and past 9999 it overflows).
    """
    if run_at is not None and delay is not None:
        raise ValueError("give run_at or delay, not both")
    if run_at is not None:
        if run_at.tzinfo is None:
            raise ValueError(f"run_at must be timezone-aware, got naive {run_at.isoformat()}")
        when: datetime | None = run_at
        what = f"run_at {run_at.isoformat()}"
    elif delay is not None:
        what = f"delay {delay!r}"
        try:
            when = now + (delay if isinstance(delay, timedelta) else timedelta(seconds=delay))
        except (OverflowError, ValueError):  # too many days for a timedelta or a date; NaN
            when = None
    else:
        return now
    if when is None or not EARLIEST_RUN_AT <= when < LATEST_RUN_AT:
        raise ValueError(
            f"{what} is out of range: a job runs from {EARLIEST_RUN_AT:%Y-%m-%d} to "
            f"{LATEST_RUN_AT:%Y-%m-%d} (UTC)"
        )
    return when


class Producer:
    """The engine's write path for new jobs; see the module docstring.

    Args:
        engine: The engine whose store, hooks and workers it serves.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._wakers: list[Callable[[], None]] = []
        self._hookimpls: tuple[pluggy.HookImpl, ...] = ()
        self.refresh()

    def refresh(self) -> None:
        """Look up the ``dispatch_job_enqueuing`` implementations again (after a plugin was
        registered): once, not per enqueue, in pluggy's order (last registered first)."""
        impls = self.engine.pm.hook.dispatch_job_enqueuing.get_hookimpls()
        self._hookimpls = tuple(reversed(impls))

    @property
    def hooked(self) -> bool:
        """Whether a plugin implements ``dispatch_job_enqueuing`` (without one, enqueue skips
        the hook entirely)."""
        return bool(self._hookimpls)

    # -- building ------------------------------------------------------------------------------

    def new_job(
        self,
        definition: JobDefinition[Any],
        raw_payload: Any,
        *,
        now: datetime | None = None,
        **options: Any,
    ) -> NewJob:
        """The new job of ``definition`` with its payload already in JSON form; ``options``
        are :class:`EnqueueOptions`, each defaulting to the definition's.

        Raises:
            ValueError: an option is invalid (a bad ``job_id``, ``job_id`` with
                ``unique_key``, a negative ``max_retries``, a time out of range).
            TypeError: an option that is not an enqueue option.
        """
        unknown = options.keys() - ENQUEUE_OPTIONS
        if unknown:
            raise TypeError(
                f"unknown enqueue option(s) {', '.join(sorted(unknown))}; the options are "
                f"{', '.join(sorted(ENQUEUE_OPTIONS))}"
            )
        opts = cast(EnqueueOptions, options)
        now = now or utcnow()
        job_id = opts.get("job_id")
        unique_key = opts.get("unique_key")
        if job_id is not None:
            if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
                raise ValueError(
                    f"job_id must be 1 to 200 printable characters without spaces, got {job_id!r}"
                )
            if unique_key is not None:
                raise ValueError("give job_id or unique_key, not both")
            # A chosen id is idempotent: enqueueing it again returns the job that has it.
            unique_key = f"job-id:{job_id}"
        when = scheduled_at(now, opts.get("run_at"), opts.get("delay"))
        max_retries = opts.get("max_retries")
        retries = definition.max_retries if max_retries is None else max_retries
        if retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {retries}")
        priority = opts.get("priority")
        timeout = opts.get("timeout")
        tenant = opts.get("tenant")
        headers = opts.get("headers")
        return NewJob(
            id=job_id or new_id("job"),
            name=definition.name,
            queue=opts.get("queue") or definition.queue,
            payload=raw_payload,
            priority=definition.priority if priority is None else priority,
            max_attempts=retries + 1,
            timeout=definition.timeout if timeout is None else timeout,
            run_at=when,
            created_at=now,
            unique_key=unique_key,
            tenant=tenant if tenant is not None else current_tenant(),
            headers=dict(headers) if headers else {},
        )

    # -- writing -------------------------------------------------------------------------------

    def scope(self, jobs: Sequence[NewJob]) -> AbstractContextManager[object]:
        """Run the ``dispatch_job_enqueuing`` hook for ``jobs`` about to be written; the
        context managers it returns are held open around the write (``with`` this)."""
        if not self._hookimpls or not jobs:
            return _NO_PRODUCERS
        return _ProducerScope(self.engine, self._hookimpls, jobs)

    def enqueued(
        self, jobs: Sequence[Job], new: Sequence[NewJob], *, committed: bool = True
    ) -> None:
        """After a write of ``new`` returned ``jobs``: wake the workers, and report the jobs
        that were written (not those a unique key matched) to ``dispatch_job_enqueued``."""
        self.wake()
        hooks = self.engine.hooks
        # A job written in a caller's transaction may still be rolled back: no hook reports it.
        if committed and hooks.wants("dispatch_job_enqueued"):
            ids = {n.id for n in new}
            for job in jobs:
                if job.id in ids:  # a duplicate unique_key returned an existing job
                    hooks.emit("dispatch_job_enqueued", job=job, engine=self.engine)

    async def write(self, new: Sequence[NewJob], *, conn: Any = None) -> list[Job]:
        """Write ``new`` through the engine's store (or the caller's connection ``conn``,
        inside its transaction), with the hooks and the wake-up around it.

        Raises:
            ConfigurationError: ``conn`` given to a store that cannot join a transaction.
        """
        store = self.engine.store
        with self.scope(new):
            if conn is None:
                jobs = await store.enqueue(new)
            else:
                try:
                    jobs = await store.enqueue_in(conn, new)
                except NotImplementedError:
                    raise _no_transactions(self.engine) from None
        self.enqueued(jobs, new, committed=conn is None)
        return jobs

    def write_blocking(self, new: Sequence[NewJob], *, conn: Any = None) -> list[Job]:
        """The blocking twin of :meth:`write`, for code without an event loop."""
        engine = self.engine
        jobs: list[Job]
        if conn is not None:
            # Optional SyncStore method: write through the caller's connection/transaction.
            enqueue_in = getattr(engine.blocking.sync(), "enqueue_in", None)
            if enqueue_in is None:
                raise _no_transactions(engine)
            with self.scope(new):
                jobs = enqueue_in(conn, new)
        else:
            with self.scope(new):
                jobs = engine.blocking.call("enqueue", new)
        self.enqueued(jobs, new, committed=conn is None)
        return jobs

    # -- waking this process's workers ---------------------------------------------------------

    def wake(self) -> None:
        """Tell this process's workers that jobs may be claimable now."""
        for waker in self._wakers:
            waker()

    def add_waker(self, waker: Callable[[], None]) -> None:
        """Call ``waker`` (thread-safe, cheap) whenever jobs may have become claimable."""
        self._wakers.append(waker)

    def remove_waker(self, waker: Callable[[], None]) -> None:
        """Stop calling ``waker``."""
        if waker in self._wakers:
            self._wakers.remove(waker)


def _no_transactions(engine: Engine) -> ConfigurationError:
    return ConfigurationError(
        f"store {engine.safe_url} does not support enqueueing in a caller's transaction (conn=...)"
    )


_NO_PRODUCERS: AbstractContextManager[object] = contextlib.nullcontext()


class _ProducerScope:
    """The ``dispatch_job_enqueuing`` implementations' context managers, entered around a
    write. A plugin that fails here is logged and skipped: it never stops an enqueue."""

    def __init__(
        self, engine: Engine, impls: Sequence[pluggy.HookImpl], jobs: Sequence[NewJob]
    ) -> None:
        self._engine = engine
        self._impls = impls
        self._jobs = jobs
        self._entered: list[AbstractContextManager[Any]] = []

    def __enter__(self) -> None:
        kwargs = {"jobs": self._jobs, "engine": self._engine}
        # Each implementation on its own (pluggy would stop at the first that raises).
        for impl in self._impls:
            try:
                cm = cast(
                    "AbstractContextManager[Any] | None",
                    impl.function(*(kwargs[name] for name in impl.argnames)),
                )
                if cm is not None:
                    cm.__enter__()
                    self._entered.append(cm)
            except Exception:
                log.exception(
                    "dispatch_job_enqueuing of plugin %s failed; enqueueing without it",
                    impl.plugin_name,
                )

    def __exit__(self, *exc: Any) -> None:
        for cm in reversed(self._entered):
            try:
                cm.__exit__(*exc)
            except Exception:
                log.exception("a dispatch_job_enqueuing context manager failed to exit")
        self._entered.clear()
