"""Instruments: job counters (started and completed counted by the job middleware, the rest
from the lifecycle hooks, which report what was stored), duration and queue-latency histograms
and the running-jobs gauge fed by the job middleware, and the queue-depth gauge refreshed from
the store by a background task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.util.types import AttributeValue

from dispatch_core.models import Job, utcnow
from dispatch_plugins.otel import _conventions as c

if TYPE_CHECKING:
    from dispatch_core import Engine

__all__ = ["Metrics", "DURATION_BUCKETS", "COUNTERS"]

log = logging.getLogger("dispatch_plugins.otel")

Attributes = dict[str, AttributeValue]

#: Seconds between two looks for a global provider while there is none.
_RECHECK = 1.0

#: Histogram bucket boundaries (seconds) advised for both histograms: 5 ms to 5 min.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


#: The job counters: name -> description.
COUNTERS: dict[str, str] = {
    "dispatch.jobs.enqueued": "Jobs written to the store.",
    "dispatch.jobs.started": "Attempts started.",
    "dispatch.jobs.completed": "Jobs completed.",
    "dispatch.jobs.failed": "Jobs failed for good (no attempts left).",
    "dispatch.jobs.retried": "Failed attempts that will run again.",
    "dispatch.jobs.dead_lettered": "Failed jobs copied to the dead-letter queue.",
    "dispatch.jobs.rescued": "Jobs taken back from a dead worker or an expired lease.",
}


class Metrics:
    """The metrics half of :class:`~dispatch_plugins.otel.OTel`.

    One per meter provider (see :meth:`for_provider`): a meter provider keeps the first
    instrument registered under a name, so two objects on one provider would lose the
    second's observations.

    Args:
        meter_provider: Where measurements go; ``None`` uses the global provider (resolved
            when measured, so a provider set up after this object still receives them).
    """

    @classmethod
    def for_provider(cls, meter_provider: metrics.MeterProvider | None) -> Metrics:
        """The instance for ``meter_provider`` (``None``: the global one), made on first use."""
        with _SHARED_LOCK:
            if meter_provider is None:
                global _GLOBAL
                if _GLOBAL is None:
                    _GLOBAL = cls(None)
                return _GLOBAL
            found = _SHARED.get(meter_provider)
            if found is None:
                found = _SHARED[meter_provider] = cls(meter_provider)
            return found

    def __init__(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        from dispatch_plugins.otel._version import VERSION

        meter = metrics.get_meter(c.SCOPE, VERSION, meter_provider)
        #: While no global provider is set, look again at most every _RECHECK seconds.
        self._recheck_at = 0.0
        self._provider = meter_provider
        self._live = meter_provider is not None and not _is_api_provider(meter_provider)
        self._attributes: dict[tuple[str, str], Attributes] = {}
        self._outcomes: dict[tuple[str, str, str], Attributes] = {}
        self._running: dict[str, int] = {}

        # Counters are observable: a job adds one to a plain in-process total, and the totals
        # are read when metrics are collected (exact, and no SDK call per job).
        self._lock = threading.Lock()
        self.totals: dict[str, dict[tuple[str, str], int]] = {}
        for name, what in COUNTERS.items():
            totals: dict[tuple[str, str], int] = {}
            self.totals[name] = totals
            meter.create_observable_counter(
                name, callbacks=[self._observe_totals(totals)], unit="{job}", description=what
            )
        self.duration = meter.create_histogram(
            "dispatch.job.duration",
            unit="s",
            description="How long attempts ran, by outcome.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.queue_latency = meter.create_histogram(
            "dispatch.job.queue_latency",
            unit="s",
            description="From when a job became runnable to when an attempt started.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        meter.create_observable_gauge(
            "dispatch.jobs.running",
            callbacks=[self._observe_running],
            unit="{job}",
            description="Jobs running in this process.",
        )
        meter.create_observable_gauge(
            "dispatch.queue.depth",
            callbacks=[self._observe_depth],
            unit="{job}",
            description="Jobs waiting in the queue (pending or retrying).",
        )
        #: Per engine (by id): the last depths read, and the task reading them.
        self._depths: dict[int, dict[str, int]] = {}
        self._pollers: dict[int, asyncio.Task[None]] = {}
        #: Collections of the depth gauge so far: a poller reads the store only when someone
        #: collected since its last read (no reader, no queries).
        self._collections = 0

    def live(self) -> bool:
        """Whether measurements go anywhere: false while the global provider is the API's
        no-op (or proxy) one. A global provider set later is noticed within a second; once
        set, the answer is kept."""
        if self._live:
            return True
        if self._provider is not None:
            return False  # an explicit no-op provider
        now = time.monotonic()
        if now < self._recheck_at:
            return False
        self._recheck_at = now + _RECHECK
        if _is_api_provider(metrics.get_meter_provider()):
            return False
        self._live = True
        return True

    def attributes(self, name: str, queue: str) -> Attributes:
        """The attributes of a job's measurements (one dict per name and queue, reused)."""
        found = self._attributes.get((name, queue))
        if found is None:
            found = self._attributes[(name, queue)] = {
                c.JOB_NAME: name,
                c.MESSAGING_DESTINATION_NAME: queue,
            }
        return found

    def _outcome_attributes(self, name: str, queue: str, outcome: str) -> Attributes:
        found = self._outcomes.get((name, queue, outcome))
        if found is None:
            found = self._outcomes[(name, queue, outcome)] = {
                **self.attributes(name, queue),
                c.JOB_OUTCOME: outcome,
            }
        return found

    # -- around each attempt (called by the job middleware) --------------------------------------

    def begin(self, job: Job, *, histograms: bool = True) -> float | None:
        """An attempt of ``job`` starts: count it and (with ``histograms``) its queue latency;
        returns the start time :meth:`end` needs (``None`` when measurements go nowhere)."""
        if not self.live():
            return None
        name, queue = job.name, job.queue
        key = (name, queue)
        started = self.totals["dispatch.jobs.started"]
        running = self._running
        with self._lock:
            started[key] = started.get(key, 0) + 1
            running[queue] = running.get(queue, 0) + 1
        if not histograms:
            return time.perf_counter()
        runnable = job.run_at if job.run_at > job.created_at else job.created_at
        started_at = job.started_at or utcnow()
        self.queue_latency.record(
            max((started_at - runnable).total_seconds(), 0.0), self.attributes(name, queue)
        )
        return time.perf_counter()

    def end(self, job: Job, t0: float, outcome: str, *, histograms: bool = True) -> None:
        """The attempt begun at ``t0`` ended with ``outcome`` (``completed``, ``failed`` or
        ``cancelled``); with ``histograms``, its duration is recorded."""
        seconds = time.perf_counter() - t0
        name, queue = job.name, job.queue
        with self._lock:
            self._running[queue] -= 1
            if outcome == "completed":
                # Counted here rather than from dispatch_job_completed: that hook would cost
                # every job an out-of-band call (and a copy of the job) even with no SDK.
                completed = self.totals["dispatch.jobs.completed"]
                key = (name, queue)
                completed[key] = completed.get(key, 0) + 1
        if histograms:
            self.duration.record(seconds, self._outcome_attributes(name, queue, outcome))

    def _observe_running(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            found = list(self._running.items())
        return [Observation(n, {c.MESSAGING_DESTINATION_NAME: q}) for q, n in found]

    # -- lifecycle --------------------------------------------------------------------------------

    def add(self, counter: str, name: str, queue: str) -> None:
        """Add one job of ``name`` on ``queue`` to ``counter`` (a :data:`COUNTERS` name)."""
        totals = self.totals[counter]
        key = (name, queue)
        with self._lock:
            totals[key] = totals.get(key, 0) + 1

    def count(self, counter: str, job: Job) -> None:
        """Add ``job`` to ``counter`` (a :data:`COUNTERS` name), if measurements go anywhere."""
        if self.live():
            self.add(counter, job.name, job.queue)

    def _observe_totals(
        self, totals: dict[tuple[str, str], int]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                found = list(totals.items())
            return [Observation(n, self.attributes(name, queue)) for (name, queue), n in found]

        return observe

    async def cron_fired(self, job_id: str, engine: Engine) -> None:
        """Count the job of a scheduled cron fire (a manual trigger is reported as enqueued)."""
        job = await engine.aget_job(job_id)
        if c.CRON_TICK_HEADER in job.headers:
            self.count("dispatch.jobs.enqueued", job)

    # -- queue depth ------------------------------------------------------------------------------

    def start_polling(self, engine: Engine, interval: float) -> None:
        """Read ``engine``'s queue depths now and every ``interval`` seconds after (only while
        the gauge is collected), on a task of the running loop (replacing a task left on
        another loop)."""
        key = id(engine)
        old = self._pollers.get(key)
        loop = asyncio.get_running_loop()
        if old is not None:
            if not old.done() and old.get_loop() is loop:
                return
            _cancel(old)
        self._pollers[key] = loop.create_task(
            self._poll(engine, interval), name="dispatch-otel-depth"
        )

    def stop_polling(self, engine: Engine) -> None:
        """Stop reading ``engine``'s queue depths and forget them."""
        task = self._pollers.pop(id(engine), None)
        if task is not None:
            _cancel(task)
        self._depths.pop(id(engine), None)

    async def _poll(self, engine: Engine, interval: float) -> None:
        seen = -1
        while True:
            if seen != self._collections:
                seen = self._collections
                try:
                    queues = await engine.aqueues()
                except Exception as exc:
                    log.warning("dispatch-otel: reading the queue depths failed: %s", exc)
                else:
                    # A queue that disappeared (pruned) reads 0 rather than vanishing.
                    depths = dict.fromkeys(self._depths.get(id(engine), {}), 0)
                    depths.update((q.name, q.depth) for q in queues)
                    self._depths[id(engine)] = depths
            await asyncio.sleep(interval)

    def _observe_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        self._collections += 1
        merged: dict[str, int] = {}
        for depths in list(self._depths.values()):
            merged.update(depths)
        return [Observation(n, {c.MESSAGING_DESTINATION_NAME: q}) for q, n in merged.items()]


_SHARED_LOCK = threading.Lock()
_SHARED: weakref.WeakKeyDictionary[metrics.MeterProvider, Metrics] = weakref.WeakKeyDictionary()
_GLOBAL: Metrics | None = None


def _is_api_provider(provider: metrics.MeterProvider) -> bool:
    # The API's own providers (the no-op one, and the proxy that stands in until a global
    # provider is set) record nothing; an SDK's live in another package.
    return isinstance(provider, metrics.NoOpMeterProvider) or type(provider).__module__.startswith(
        "opentelemetry.metrics"
    )


def _cancel(task: asyncio.Task[None]) -> None:
    # The task's loop may be closed already (a previous asyncio.run()).
    with contextlib.suppress(RuntimeError):
        task.cancel()
