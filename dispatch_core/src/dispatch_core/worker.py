"""The worker: one fetcher, a pool of job tasks, a batched finisher, heartbeats, leadership.

One fetcher claims as many jobs as there are free slots, in one store call. Each job runs in
its own task through the middleware chain. Outcomes are buffered and written in batches by a
finisher task, so a busy worker does one store round trip per batch, not per job; results are
checked before they are queued, and a batch the store still refuses is written in halves, so
one bad outcome fails alone (:meth:`Worker._settle`). A heartbeat task refreshes the worker's
row and the leases of its running jobs (and of finished ones whose outcome waits) in one call,
and stops attempts whose lease was lost. A leader task contends for the cluster's leader lease; the
leader rescues the jobs of dead workers, fires cron and prunes old rows
(:mod:`dispatch_core.leader`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Collection, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from dispatch_core._ids import new_id
from dispatch_core._outcomes import OutcomeWriter, UndecodablePayload, error_text, fail_reason
from dispatch_core._stall import StallGuard, make_guard
from dispatch_core._stats import DrainResult, WorkerStats
from dispatch_core._threads import JobThreads
from dispatch_core._unhandled import UnhandledJobs
from dispatch_core._urls import redact_url
from dispatch_core.cluster import WorkerInfo
from dispatch_core.context import JobContext
from dispatch_core.errors import (
    ConfigurationError,
    FailJob,
    PayloadError,
    ResultError,
    RetryJob,
)
from dispatch_core.leader import LeaderDuties, take_over
from dispatch_core.middleware import build_chain
from dispatch_core.models import Job, Outcome, OutcomeKind, utcnow
from dispatch_core.serde import (
    DEFAULT_MAX_RESULT_BYTES,
    check_result,
    from_json_payload,
    storable_error,
)

if TYPE_CHECKING:
    from dispatch_core.engine import Engine

__all__ = ["Worker", "WorkerStats", "DrainResult"]

log = logging.getLogger("dispatch_core.worker")

_IDLE_BASE = 0.05  # first idle wait (s); doubles up to poll_interval
_STORE_RETRY_MAX = 5.0  # cap of the wait between retries when the store is unreachable
_WATCHDOG_TICK = 0.05  # resolution of job timeouts (s)


T = TypeVar("T")


class Worker:
    """Runs the jobs of one engine.

    Args:
        engine: The engine whose jobs and store to use.
        queues: Queues to take jobs from (default: every queue).
        concurrency: Jobs run at once (async tasks; sync handlers use a thread pool this big).
        lease_seconds: How long a claim holds a job without a heartbeat.
        heartbeat_interval: Seconds between heartbeats, which refresh the worker's row and
            extend its jobs' leases (default: 2, or a third of the lease if that is shorter).
        worker_timeout: Seconds without a heartbeat after which the leader declares a worker
            dead and rescues its jobs (default: 7, at least 3.5 heartbeat intervals). With the
            defaults, the jobs of a killed worker run again within about 10 s.
        rescue_interval: Seconds between the leader's passes (lease renewal, rescue, cron),
            default 1.
        leader_ttl: Seconds the leader lease lasts unless renewed (default 5, at least three
            rescue intervals): how long the cluster stays leaderless when its leader dies.
        lead: Take part in the leader election (default ``True``).
        poll_interval: Longest idle wait between polls when nothing wakes the worker.
        grace_period: Seconds in-flight jobs get to finish at shutdown before they are cancelled
            and released (their attempt is not consumed).
        worker_id: Stable id (default: a new ``wkr_…``).
        prefetch: Jobs claimed ahead of free slots (default 0: claim exactly the free slots).
            A buffer hides the store's round trip when jobs are short; buffered jobs are
            leased like running ones and given back (not consuming an attempt) when they wait
            longer than a heartbeat interval or the worker stops, so an idle worker can take
            them.
        unhandled_check_interval: Seconds between checks for jobs waiting in this worker's
            queues under a name no running worker registers (default 60; the first check
            comes a few seconds after the start). Each such name is logged once, at WARNING,
            with what to do. A drain does not check (it warns when it ends instead).
        store_timeout: Seconds any one store call of the worker and of its leader duties may
            take before it counts as failed (default: the lease, at least 5): a hung
            connection then stalls nothing, the call is retried like any store failure. A
            store whose calls carry their own deadline (``Store.bounds_calls``, PostgreSQL's
            ``call_timeout``) is left to it unless this is given.
        max_result_bytes: Largest result recorded, in bytes of compact UTF-8 JSON (default
            10 MiB; ``None``: no limit but the store's). A result that is larger, is not JSON
            (NaN, infinities, other types) or holds a lone surrogate fails its job with a
            :class:`~dispatch_core.errors.ResultError`, and the job is dead-lettered at once.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 10,
        lease_seconds: float = 15.0,
        heartbeat_interval: float | None = None,
        worker_timeout: float | None = None,
        rescue_interval: float | None = None,
        leader_ttl: float | None = None,
        lead: bool = True,
        poll_interval: float = 1.0,
        grace_period: float = 30.0,
        worker_id: str | None = None,
        prefetch: int = 0,
        unhandled_check_interval: float = 60.0,
        max_result_bytes: int | None = DEFAULT_MAX_RESULT_BYTES,
        store_timeout: float | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigurationError(f"concurrency must be >= 1, got {concurrency}")
        if prefetch < 0:
            raise ConfigurationError(f"prefetch must be >= 0, got {prefetch}")
        if lease_seconds <= 0:
            raise ConfigurationError(f"lease_seconds must be > 0, got {lease_seconds}")
        if max_result_bytes is not None and (
            isinstance(max_result_bytes, bool)
            or not isinstance(max_result_bytes, int)
            or max_result_bytes < 1
        ):
            raise ConfigurationError(
                f"max_result_bytes must be a positive number of bytes or None, "
                f"got {max_result_bytes!r}"
            )
        if unhandled_check_interval <= 0:
            raise ConfigurationError(
                f"unhandled_check_interval must be > 0 seconds, got {unhandled_check_interval}"
            )
        self.engine = engine
        self.queues: list[str] | None = list(queues) if queues else None
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.lease_seconds = lease_seconds
        self.heartbeat_interval = heartbeat_interval or min(2.0, lease_seconds / 3)
        self.worker_timeout = worker_timeout or max(7.0, 3.5 * self.heartbeat_interval)
        if self.worker_timeout <= self.heartbeat_interval:
            raise ConfigurationError(
                f"worker_timeout ({self.worker_timeout}s) must be longer than the heartbeat "
                f"interval ({self.heartbeat_interval}s)"
            )
        self.rescue_interval = rescue_interval or 1.0
        leader_ttl = leader_ttl or max(5.0, 3 * self.rescue_interval)
        if leader_ttl <= self.rescue_interval:
            raise ConfigurationError(
                f"leader_ttl ({leader_ttl}s) must be longer than rescue_interval "
                f"({self.rescue_interval}s), which renews it"
            )
        self.leader_ttl = leader_ttl
        self.lead = lead
        self.poll_interval = poll_interval
        self.grace_period = grace_period
        self.unhandled_check_interval = unhandled_check_interval
        self.max_result_bytes = max_result_bytes
        if store_timeout is not None and not store_timeout > 0:
            raise ConfigurationError(f"store_timeout must be > 0 seconds, got {store_timeout}")
        self.store_timeout = store_timeout or max(lease_seconds, 5.0)
        self._store_bounds_calls = engine.store.bounds_calls and store_timeout is None
        self.id = worker_id or new_id("wkr")
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.stats = WorkerStats()
        self.leader: LeaderDuties | None = None
        #: Monotonic time since which every store call succeeded; ``None`` while the store
        #: fails. The leader rescues by worker timeout only after a full timeout of contact.
        self._contact_since: float | None = time.monotonic()
        self._info: WorkerInfo | None = None
        self._schedules_applied = False

        self._active: dict[str, tuple[asyncio.Task[None], JobContext]] = {}
        #: Prefetched jobs waiting for a slot, with the monotonic time they were claimed.
        self._ready: collections.deque[tuple[Job, float]] = collections.deque()
        self._prefetch_paused = False
        self.outcomes = OutcomeWriter(self)
        self._lost: set[str] = set()
        self._stopping = False
        self._hard = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id = 0
        self._drain = False
        self._wait_scheduled = False
        self._executor: JobThreads | None = None
        self._emit_started = False
        self._idle = _IDLE_BASE
        #: Since when a drain has seen due jobs that its claims did not return.
        self._held_since: float | None = None
        self.unhandled = UnhandledJobs(self)
        #: Watches the event loop from a thread (not in a drain; see _stall.py).
        self._guard: StallGuard | None = None
        #: Decides, with the guard's thread, whether a job starts or is given back.
        self._start_lock = threading.Lock()
        #: Jobs the guard gave back while the loop was blocked; they must not start.
        self._given_back: set[str] = set()

    # -- control -------------------------------------------------------------------------------

    def wake(self) -> None:
        """Ask the fetcher to poll now. Safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._thread_id:
            self._wake_ev.set()
        else:
            loop.call_soon_threadsafe(self._wake_ev.set)

    def stop(self, *, grace: float | None = None) -> None:
        """Stop claiming; let in-flight jobs finish within the grace period, then cancel and
        release them. A second call stops at once. Safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._stopping = True
            return
        if threading.get_ident() != self._thread_id:
            loop.call_soon_threadsafe(lambda: self.stop(grace=grace))
            return
        if self._stopping or grace == 0:
            self._hard = True
            self._hard_ev.set()
        if grace is not None:
            self.grace_period = grace
        self._stopping = True
        self._wake_ev.set()
        self._slot_ev.set()

    @property
    def names(self) -> Collection[str]:
        """The job names this worker runs (those it claims)."""
        return self._names

    @property
    def draining(self) -> bool:
        """Whether this worker runs as a drain (:meth:`drain`), not as a cluster member."""
        return self._drain

    def busy_threads(self) -> int:
        """Sync handler calls still running in the worker's threads (a timed-out or released
        sync job's thread cannot be killed and runs on until its handler returns)."""
        return self._executor.busy if self._executor is not None else 0

    # -- running ---------------------------------------------------------------------------------

    async def run(self, *, install_signal_handlers: bool = False) -> WorkerStats:
        """Run until :meth:`stop` (or SIGINT/SIGTERM when ``install_signal_handlers``)."""
        await self._start()
        loop = asyncio.get_running_loop()
        if install_signal_handlers:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.stop)
        try:
            await self._fetch_loop()
        finally:
            if install_signal_handlers:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            await self._shutdown()
        return self.stats

    async def drain(
        self, *, wait_scheduled: bool = False, timeout: float | None = 60.0
    ) -> WorkerStats:
        """Run until no job is runnable and nothing is in flight; see :meth:`Engine.drain`."""
        self._drain = True
        self._wait_scheduled = wait_scheduled
        task = asyncio.ensure_future(self.run())
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            self.stop(grace=0)
            await task
            raise TimeoutError(f"drain did not finish within {timeout}s")
        stats = task.result()
        await self.unhandled.warn_left_behind()
        return stats

    async def _start(self) -> None:
        await self.engine.aopen()
        self._contact_since = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        self._wake_ev = asyncio.Event()
        self._slot_ev = asyncio.Event()
        self._hard_ev = asyncio.Event()
        self._definitions = self.engine.jobs
        if not self._definitions:
            log.warning("worker %s starts with no registered jobs; it will claim nothing", self.id)
        self._names: Collection[str] = frozenset(self._definitions)
        self._chain = build_chain(self.engine.middleware.for_chain(), self._call_handler)
        # Structure hooks looked up once per job name, not once per job.
        converter = self.engine.converter
        self._structure = {
            name: converter.get_structure_hook(d.payload_type)
            for name, d in self._definitions.items()
            if d.takes_payload and d.payload_type is not Any
        }
        self._executor = JobThreads(
            max_workers=self.concurrency, thread_name_prefix=f"dispatch-{self.id[-6:]}"
        )
        self.engine.producer.add_waker(self.wake)
        self._stop_listening = await self.engine.store.listen(self.wake)
        self._idle_max = self.poll_interval
        if not self._drain:
            self._guard = make_guard(self)
            if self._guard is not None:
                self._guard.start()
        self._background = [
            asyncio.create_task(self.outcomes.run(), name="dispatch-finisher"),
            asyncio.create_task(self._heartbeat_loop(), name="dispatch-heartbeat"),
            asyncio.create_task(self._watchdog_loop(), name="dispatch-timeouts"),
        ]
        if self._drain:
            # A drain is a test's or a script's: it takes no part in the cluster, but obeys
            # the queue limits declared in code.
            await self.bounded(self.engine.apply_schedules())
        else:
            await self._register()
            if self.lead:
                self.leader = LeaderDuties(self, ttl=self.leader_ttl, interval=self.rescue_interval)
                self._background.append(
                    asyncio.create_task(self.leader.run(), name="dispatch-leader")
                )
            self._background.append(
                asyncio.create_task(self.unhandled.run(), name="dispatch-unhandled-jobs")
            )
        log.info(
            "worker %s started on %s (queues=%s, concurrency=%d)",
            self.id,
            redact_url(self.engine.url),
            ",".join(self.queues) if self.queues else "*",
            self.concurrency,
        )

    async def _register(self) -> None:
        """Write the worker's row and the declared cron entries and queue limits."""
        now = utcnow()
        self._info = WorkerInfo(
            id=self.id,
            hostname=self.hostname,
            pid=self.pid,
            queues=tuple(self.queues) if self.queues else None,
            concurrency=self.concurrency,
            version=_version(),
            names=tuple(sorted(self._names)),
            started_at=now,
            last_seen=now,
        )
        try:
            await take_over(self)
            await self.bounded(self.engine.store.register_worker(self._info))
            await self.bounded(self.engine.apply_schedules())
        except Exception as exc:  # the heartbeats register it and retry the schedules
            self.store_failed()
            log.warning("worker %s: registration failed (%s); will retry", self.id, exc)
        else:
            self._schedules_applied = True

    async def bounded(self, call: Awaitable[T]) -> T:
        """Await one store call within :attr:`store_timeout`; a :class:`TimeoutError` (an
        :class:`OSError`, so it reads as the store being unavailable) when it takes longer."""
        if self._store_bounds_calls:  # the store's own deadline is cheaper than a timer
            return await call
        async with asyncio.timeout(self.store_timeout):
            return await call

    def store_failed(self) -> None:
        """Note a failed store call: the leader rescues by worker timeout only after a full
        timeout of contact."""
        self._contact_since = None

    def store_ok(self) -> None:
        """Note a successful store call."""
        if self._contact_since is None:
            self._contact_since = time.monotonic()

    def store_contact_for(self, seconds: float) -> bool:
        """Whether every store call of this worker succeeded for the last ``seconds``."""
        since = self._contact_since
        return since is not None and time.monotonic() - since >= seconds

    async def _fetch_loop(self) -> None:
        failures = 0
        self._idle = _IDLE_BASE
        # With a buffer, top it up in real batches rather than one job per freed slot.
        batch_min = max(1, (self.concurrency + self.prefetch) // 2) if self.prefetch else 1
        while not self._stopping:
            # After giving back stale prefetched jobs, do not grab them again at once.
            ahead = 0 if self._prefetch_paused else self.prefetch
            room = self.concurrency + ahead - len(self._active) - len(self._ready)
            if room <= 0 or (self._ready and room < batch_min):
                self._slot_ev.clear()
                await self._slot_ev.wait()
                continue
            try:
                finished = await self._fetch_once(room)
            except Exception as exc:  # the store is unreachable: keep trying, never die
                self.store_failed()
                failures += 1
                delay = min(_IDLE_BASE * 2**failures, _STORE_RETRY_MAX)
                log.warning(
                    "worker %s: polling failed (%s); retrying in %.2fs", self.id, exc, delay
                )
                await self._wait(delay)
                continue
            failures = 0
            if finished:
                return

    async def _fetch_once(self, room: int) -> bool:
        """Claim up to ``room`` jobs and launch those that fit the free slots (buffering the
        rest), or wait for work; True once a drain is done."""
        store = self.engine.store
        was_idle = not self._active and not self._ready and self.outcomes.idle()
        self._wake_ev.clear()
        jobs = await self.bounded(
            store.claim(
                worker_id=self.id,
                queues=self.queues,
                names=self._names,
                limit=room,
                lease_seconds=self.lease_seconds,
                now=utcnow(),
            )
        )
        if jobs:
            self._idle = _IDLE_BASE
            self._held_since = None
            self._emit_started = self.engine.hooks.wants("dispatch_job_started")
            claimed_at = time.monotonic()
            for job in jobs:
                if len(self._active) < self.concurrency:
                    self._launch(job)
                else:
                    self._ready.append((job, claimed_at))
            return False
        if self._drain and was_idle:
            nxt = await self.bounded(store.next_run_at(queues=self.queues, names=self._names))
            if nxt is None:
                return True
            until = (nxt - utcnow()).total_seconds()
            if until <= 0:
                # Due but not claimed: held back by a queue's rate limit or cap (tokens come
                # back soon) or by a pause (they don't): back off, and give up once the
                # backoff reaches the poll interval.
                if self._held_since is None:
                    self._held_since = time.monotonic()
                elif time.monotonic() - self._held_since > self._idle_max:
                    return True
                await self._wait(self._idle)
                self._idle = min(self._idle * 2, self._idle_max)
                return False
            if not self._wait_scheduled:
                return True
            await self._wait(max(until, 0.001))
            return False
        if self._drain:
            # Jobs are in flight: their outcome (a retry) may make more work.
            await self._wait(self._idle_max)
            return False
        wait = self._idle
        nxt = await self.bounded(store.next_run_at(queues=self.queues, names=self._names))
        if nxt is not None:
            until = (nxt - utcnow()).total_seconds()
            # A job already due that the claim did not return is held back by a queue limit
            # or a pause: the idle backoff applies, or the loop would spin.
            if until > 0:
                wait = min(wait, until)
        await self._wait(wait)
        self._idle = min(self._idle * 2, self._idle_max)
        return False

    async def _wait(self, seconds: float) -> None:
        if self._wake_ev.is_set() or self._stopping:
            return
        waiter = asyncio.ensure_future(self._wake_ev.wait())
        slot = asyncio.ensure_future(self._slot_ev.wait()) if self._drain else None
        try:
            await asyncio.wait(
                [w for w in (waiter, slot) if w],
                timeout=seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            waiter.cancel()
            if slot is not None:
                slot.cancel()

    def _launch(self, job: Job) -> None:
        ctx = JobContext(job, self.engine, self.id)
        task = asyncio.create_task(self._execute(ctx))
        self._active[job.id] = (task, ctx)

    async def _call_handler(self, ctx: JobContext) -> Any:
        job = ctx.job
        definition = self._definitions[job.name]
        payload = job.payload
        structure = self._structure.get(job.name)
        if structure is not None:
            try:
                payload = structure(payload, definition.payload_type)
            except Exception as exc:
                # Report it with the field paths, as at enqueue. No retry can mend a payload
                # that does not fit its type (one written by another version of the app): it
                # is dead-lettered at once, to be replayed once the code reads it.
                try:
                    from_json_payload(
                        self.engine.converter, definition.name, definition.payload_type, payload
                    )
                except PayloadError as bad:
                    raise UndecodablePayload() from bad
                raise UndecodablePayload() from exc
        assert self._executor is not None
        return await definition._invoke(ctx, payload, self._executor)

    async def _execute(self, ctx: JobContext) -> None:
        job = ctx.job
        if self._guard is not None:
            with self._start_lock:
                given_back = job.id in self._given_back
                if given_back:
                    self._given_back.discard(job.id)
                else:
                    ctx._started = True
            if given_back:  # the guard gave it back while the loop was blocked
                self.stats.released += 1
                self._next_slot(job)
                return
        if self._emit_started:
            self.engine.hooks.emit("dispatch_job_started", job=job, engine=self.engine)
        token = job.attempt_token or ""
        t0 = time.perf_counter()
        outcome: Outcome | None
        try:
            result = await self._chain(ctx)
        except asyncio.CancelledError:
            ctx._request_cancel()
            if job.id in self._lost:
                self._lost.discard(job.id)
                self.stats.lost += 1
                outcome = None
            else:  # shutdown: give the job back without consuming the attempt
                outcome = Outcome(job_id=job.id, attempt_token=token, kind=OutcomeKind.RELEASE)
        except Exception as exc:
            asked = isinstance(exc, RetryJob | FailJob)
            requested = exc.delay if isinstance(exc, RetryJob) else None
            cause = exc.__cause__ if asked else None
            error = error_text(cause if isinstance(cause, Exception) else exc)
            if job.attempt < job.max_attempts and not isinstance(exc, FailJob):
                if requested is None:
                    definition = self._definitions.get(job.name)
                    backoff = (definition.backoff if definition else None) or self.engine.backoff
                    requested = backoff.delay(job.attempt)
                run_at = utcnow() + timedelta(seconds=requested)
                outcome = Outcome(
                    job_id=job.id,
                    attempt_token=token,
                    kind=OutcomeKind.RETRY,
                    error=error,
                    run_at=run_at,
                )
                if ctx.log.isEnabledFor(logging.INFO):
                    shown = cause if isinstance(cause, Exception) else exc
                    ctx.log.info(
                        "job %s (%s) attempt %d/%d failed: %r; retrying in %.1fs (at %s)",
                        job.id,
                        job.name,
                        job.attempt,
                        job.max_attempts,
                        shown,
                        requested,
                        run_at.isoformat(timespec="seconds"),
                    )
            else:
                outcome = Outcome(
                    job_id=job.id, attempt_token=token, kind=OutcomeKind.FAIL, error=error
                )
                self.outcomes.dead_reasons[job.id] = (ctx.log, fail_reason(exc))
        else:
            raw = None
            try:
                if result is not None:
                    raw = self.engine.converter.unstructure(result)
                    if raw is not None:  # checked here, so that no store refuses it in a batch
                        check_result(job.id, raw, self.max_result_bytes)
            except Exception as exc:
                if not isinstance(exc, ResultError):  # the converter could not unstructure it
                    exc = ResultError(job.id, f"cannot unstructure {type(result).__name__}: {exc}")
                # Dead-lettered at once, whatever attempts are left: the handler ran to the end,
                # another run would repeat its side effects to produce the same result.
                error = storable_error(f"ResultError: {exc}")
                outcome = Outcome(
                    job_id=job.id, attempt_token=token, kind=OutcomeKind.FAIL, error=error
                )
                self.outcomes.dead_reasons[job.id] = (ctx.log, "its result cannot be stored")
            else:
                outcome = Outcome(
                    job_id=job.id, attempt_token=token, kind=OutcomeKind.COMPLETED, result=raw
                )
        finally:
            self._next_slot(job)
        if outcome is not None:
            self.outcomes.add(outcome, job, time.perf_counter() - t0)

    def _next_slot(self, job: Job) -> None:
        """``job`` left its slot: start a prefetched job in it, and tell the fetcher."""
        self._active.pop(job.id, None)
        self._prefetch_paused = False
        if self._ready and not self._stopping:
            self._launch(self._ready.popleft()[0])
        self._slot_ev.set()

    async def _heartbeat_loop(self) -> None:
        store = self.engine.store
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            self._release_stale_prefetch()
            leases = {jid: ctx.job.attempt_token or "" for jid, (_, ctx) in self._active.items()}
            for job, _ in self._ready:
                leases[job.id] = job.attempt_token or ""
            # A finished job stays leased until its outcome is written: while a write is
            # retried, the leader must not rescue (and run again) a job that already ran.
            leases.update(self.outcomes.leases())
            for job_id in self._given_back:  # no longer this worker's
                leases.pop(job_id, None)
            if not leases and self._info is None:
                continue
            try:
                lost = await self.bounded(
                    store.heartbeat(
                        worker_id=self.id,
                        leases=leases,
                        lease_seconds=self.lease_seconds,
                        now=utcnow(),
                        worker=self._info,
                    )
                )
            except Exception as exc:
                self.store_failed()
                log.warning("worker %s: heartbeat failed (%s)", self.id, exc)
                continue
            self.store_ok()
            if self._info is not None and not self._schedules_applied:
                try:
                    await self.bounded(self.engine.apply_schedules())
                except Exception as exc:
                    log.warning("worker %s: writing cron entries failed (%s)", self.id, exc)
                else:
                    self._schedules_applied = True
            if lost and self._ready:
                kept = [(j, t) for j, t in self._ready if j.id not in lost]
                self.stats.lost += len(self._ready) - len(kept)
                self._ready = collections.deque(kept)
            for job_id in lost:
                entry = self._active.get(job_id)
                if entry is None:
                    continue
                task, ctx = entry
                log.warning(
                    "worker %s: lease of job %s lost (cancelled or rescued); stopping it",
                    self.id,
                    job_id,
                )
                self._lost.add(job_id)
                ctx._request_cancel()
                task.cancel()

    def _release_stale_prefetch(self, *, everything: bool = False) -> None:
        """Give back buffered jobs that waited longer than a heartbeat interval (or all of
        them), without consuming their attempt, so an idle worker can take them."""
        if not self._ready:
            return
        cutoff = time.monotonic() - self.heartbeat_interval
        keep: collections.deque[tuple[Job, float]] = collections.deque()
        released = 0
        for job, claimed_at in self._ready:
            if job.id in self._given_back:  # the stall guard gave it back already
                continue
            if everything or claimed_at < cutoff:
                outcome = Outcome(
                    job_id=job.id, attempt_token=job.attempt_token or "", kind=OutcomeKind.RELEASE
                )
                self.outcomes.add(outcome, job, 0.0)
                released += 1
            else:
                keep.append((job, claimed_at))
        self._ready = keep
        if released:
            self._prefetch_paused = True
            log.info("worker %s: gave back %d prefetched jobs", self.id, released)

    async def _watchdog_loop(self) -> None:
        """Cancel attempts whose deadline (set by the Timeout middleware) has passed."""
        guard = self._guard
        while True:
            await asyncio.sleep(_WATCHDOG_TICK)
            if guard is not None:
                guard.tick()
            now = time.monotonic()
            for task, ctx in list(self._active.values()):
                deadline = ctx._deadline
                if deadline is not None and now >= deadline and not ctx._timed_out:
                    ctx._timed_out = True
                    ctx._request_cancel()
                    task.cancel()

    # -- shutdown --------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        self._stopping = True
        self._release_stale_prefetch(everything=True)
        self.engine.producer.remove_waker(self.wake)
        if self._stop_listening is not None:
            try:
                await self._stop_listening()
            except Exception:
                log.exception("worker %s: stopping the store listener failed", self.id)
        tasks = [t for t, _ in self._active.values()]
        if tasks and not self._hard:
            log.info(
                "worker %s: waiting up to %.1fs for %d running jobs",
                self.id,
                self.grace_period,
                len(tasks),
            )
            hard: asyncio.Future[Any] = asyncio.ensure_future(self._hard_ev.wait())
            deadline = time.monotonic() + self.grace_period
            pending: set[asyncio.Future[Any]] = set(tasks)
            while pending and not self._hard_ev.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                _, pending = await asyncio.wait(
                    pending | {hard}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(hard)
            hard.cancel()
        self._hard = True
        leftovers = [(t, c) for t, c in self._active.values()]
        if leftovers:
            log.info(
                "worker %s: cancelling %d jobs; they go back to the queue", self.id, len(leftovers)
            )
            for task, ctx in leftovers:
                ctx._request_cancel()
                task.cancel()
            await asyncio.gather(*(t for t, _ in leftovers), return_exceptions=True)
        self.outcomes.closing = True
        self.outcomes.event.set()
        finisher = self._background[0]
        try:
            await asyncio.wait_for(asyncio.shield(finisher), timeout=max(self.grace_period, 5.0))
        except TimeoutError:
            log.error("worker %s: outcomes not recorded at shutdown; leases will expire", self.id)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._info is not None:
            try:  # also hands the leader lease over at once
                await self.bounded(self.engine.store.deregister_worker(self.id, now=utcnow()))
            except Exception as exc:
                log.warning("worker %s: could not mark itself stopped (%s)", self.id, exc)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._guard is not None:
            await asyncio.to_thread(self._guard.stop)
        await self.engine.hooks.flush()
        log.info("worker %s stopped: %s", self.id, self.stats)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("dispatch-core")
    except Exception:  # an uninstalled checkout
        return "unknown"
