"""A worker's guard against a blocked event loop.

A handler that blocks the event loop (an ``async def`` that calls blocking code, or a long
stretch of pure Python) stops every task of its worker: heartbeats included. Without them, the
leader would take the worker for dead after a few seconds and rescue its jobs while they still
run, charging an attempt to each, the ones still waiting to start included; the blocking job
would run to completion, have its outcome refused, and run again.

The guard is a thread with a store connection of its own (and an event loop of its own to
drive it). The loop ticks it; when the ticks stop for longer than a heartbeat interval, the
guard:

* heartbeats in the loop's place: it refreshes the worker's row and the leases of the jobs
  that have started (the one that blocks included, until it overruns its timeout), so nothing
  is rescued from a live worker;
* gives back, without charging an attempt, the jobs that had not started (a claimed batch's
  other jobs, prefetched ones), so that other workers run them now, and a worker killed while
  blocked does not cost them an attempt;
* logs which job blocks the loop and for how long, once per stall, and when it ends.

Whether a job started or was given back is decided under one lock, so that it is always one
or the other.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from dispatch_core.models import Job, Outcome, OutcomeKind, utcnow

if TYPE_CHECKING:
    from dispatch_core.context import JobContext
    from dispatch_core.store import Store
    from dispatch_core.worker import Worker

__all__ = ["StallGuard"]

log = logging.getLogger("dispatch_core.worker")

T = TypeVar("T")

#: Seconds past a job's timeout after which a stalled worker stops renewing its lease: the
#: watchdog cannot stop a job that holds the loop, so the leader's rescue takes over.
_OVERRUN_GRACE = 1.0
_CALL_TIMEOUT = 10.0  # seconds for one store call of the guard
_STALL_MIN = 1.0  # shortest block of the event loop (s) that the stall guard acts on


class StallGuard:
    """Watches a worker's event loop from a thread; see the module docstring.

    Args:
        worker: The worker to guard.
        store_factory: Makes the guard's own store (called in the guard's thread, once, at the
            first stall): a store that another event loop may use.
        threshold: Seconds without a tick after which the loop counts as blocked.
        give_back_after: Seconds of stall after which jobs that have not started are given
            back.
    """

    def __init__(
        self,
        worker: Worker,
        *,
        store_factory: Callable[[], Store],
        threshold: float,
        give_back_after: float,
    ) -> None:
        self.worker = worker
        self.threshold = threshold
        self.give_back_after = give_back_after
        self._store_factory = store_factory
        self._store: Store | None = None
        self._owns_store = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_tick = time.monotonic()
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"dispatch-stall-{worker.id[-6:]}", daemon=True
        )
        #: Monotonic time the current stall was first seen; None while the loop runs.
        self._stall_seen: float | None = None
        self._gave_back = False
        self._last_beat = 0.0
        #: Stalls seen, and jobs given back, over the worker's life (for tests and stats).
        self.stalls = 0
        self.given_back = 0
        self.beats = 0

    def start(self) -> None:
        """Start watching."""
        self._last_tick = time.monotonic()
        self._thread.start()

    def tick(self) -> None:
        """Called by the worker's loop, often: it runs."""
        self._last_tick = time.monotonic()

    def stop(self) -> None:
        """Stop watching and close the guard's store (blocking: call it in a thread)."""
        self._stopped.set()
        self._thread.join(timeout=_CALL_TIMEOUT + 5)

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        interval = min(self.threshold / 2, 1.0)
        try:
            while not self._stopped.wait(interval):
                try:
                    self._check()
                except Exception:
                    log.exception("worker %s: the stall guard failed a check", self.worker.id)
        finally:
            self._close()

    def _check(self) -> None:
        now = time.monotonic()
        stalled = now - self._last_tick
        if stalled < self.threshold:
            if self._stall_seen is not None:
                log.warning(
                    "worker %s: its event loop ran again after %.1fs blocked",
                    self.worker.id,
                    now - self._stall_seen + self.threshold,
                )
                self._stall_seen = None
                self._gave_back = False
            return
        if self._stall_seen is None:
            self._stall_seen = now
            self.stalls += 1
            self._report(stalled)
        if not self._gave_back and stalled >= self.give_back_after:
            self._gave_back = True
            self._give_back()
        if now - self._last_beat >= self.threshold:
            self._last_beat = now
            self._heartbeat()

    def _report(self, stalled: float) -> None:
        ctx = self._blocking_job()
        what = (
            f"job {ctx.job.id} ({ctx.job.name}) holds it"
            if ctx is not None
            else "no job is running in it (the worker's own code or a plugin holds it)"
        )
        log.warning(
            "worker %s: its event loop has been blocked for %.1fs: %s. An async handler must "
            "not call blocking code: make it a plain def (it then runs in a thread) or await "
            "asyncio.to_thread(...). Meanwhile this worker keeps its leases from another "
            "thread and gives back the jobs that have not started.",
            self.worker.id,
            stalled,
            what,
        )

    def _blocking_job(self) -> JobContext | None:
        """The job whose handler the loop's thread is running now, read off its stack."""
        frame: FrameType | None = sys._current_frames().get(self.worker._thread_id)
        execute = type(self.worker)._execute.__code__
        while frame is not None:
            if frame.f_code is execute:
                ctx = frame.f_locals.get("ctx")
                return ctx if ctx is not None else None
            frame = frame.f_back
        return None

    def _give_back(self) -> None:
        jobs = give_back_unstarted(self.worker)
        if not jobs:
            return
        outcomes = [
            Outcome(job_id=job.id, attempt_token=job.attempt_token or "", kind=OutcomeKind.RELEASE)
            for job in jobs
        ]
        try:
            written = self._call(lambda store: store.finish(outcomes, now=utcnow()))
        except Exception as exc:
            # Their leases stop being renewed (they are no longer this worker's): the leader
            # rescues them when the leases expire.
            log.warning(
                "worker %s: giving back %d jobs that had not started failed (%s)",
                self.worker.id,
                len(jobs),
                exc,
            )
            return
        self.given_back += sum(written)
        log.warning(
            "worker %s: gave back %d jobs that had not started while its loop is blocked: %s",
            self.worker.id,
            sum(written),
            ", ".join(job.id for job, ok in zip(jobs, written, strict=True) if ok),
        )

    def _heartbeat(self) -> None:
        worker = self.worker
        leases = stalled_leases(worker, time.monotonic() - _OVERRUN_GRACE)
        try:
            self._call(
                lambda store: store.heartbeat(
                    worker_id=worker.id,
                    leases=leases,
                    lease_seconds=worker.lease_seconds,
                    now=utcnow(),
                    worker=worker._info,
                )
            )
        except Exception as exc:
            log.warning("worker %s: heartbeat from the stall guard failed (%s)", worker.id, exc)
            return
        self.beats += 1

    # -- the guard's store, on the guard's own event loop ---------------------------------------

    def _call(self, call: Callable[[Store], Coroutine[Any, Any, T]]) -> T:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(
            asyncio.wait_for(self._with_store(call), _CALL_TIMEOUT)
        )

    async def _with_store(self, call: Callable[[Store], Coroutine[Any, Any, T]]) -> T:
        if self._store is None:
            store = self._store_factory()
            self._owns_store = store is not self.worker.engine.store
            if self._owns_store:
                await store.open()
            self._store = store
        return await call(self._store)

    def _close(self) -> None:
        loop, store = self._loop, self._store
        if loop is None:
            return
        try:
            if store is not None and self._owns_store:
                loop.run_until_complete(asyncio.wait_for(store.close(), _CALL_TIMEOUT))
        except Exception as exc:
            log.debug("worker %s: closing the stall guard's store failed (%s)", self.worker.id, exc)
        finally:
            loop.close()


# -- the worker's side, read and marked from the guard's thread -------------------------


def give_back_unstarted(worker: Worker) -> list[Job]:
    """Mark the jobs that have not started (launched but not yet run, prefetched) as given
    back, and return them: the guard writes them back to the store, and the loop does not
    start them. Runs in the guard's thread, while the loop is blocked."""
    jobs: list[Job] = []
    with worker._start_lock:
        for _ in range(3):  # the loop may wake and change the collections under us
            try:
                unstarted = [ctx.job for _, ctx in list(worker._active.values())]
                unstarted = [j for j in unstarted if not _is_started(worker, j.id)]
                unstarted += [job for job, _ in list(worker._ready)]
                break
            except RuntimeError:
                continue
        else:
            return []
        for job in unstarted:
            if job.id not in worker._given_back:
                worker._given_back.add(job.id)
                jobs.append(job)
    return jobs


def _is_started(worker: Worker, job_id: str) -> bool:
    entry = worker._active.get(job_id)
    return entry is not None and entry[1]._started


def stalled_leases(worker: Worker, overrun_before: float) -> dict[str, str]:
    """The leases the guard renews while the loop is blocked: every job held but those
    given back and those past their timeout by ``overrun_before`` (monotonic), which
    nothing can stop while the loop is blocked: the leader's rescue takes them over."""
    for _ in range(3):
        try:
            leases: dict[str, str] = {}
            for job_id, (_, ctx) in list(worker._active.items()):
                deadline = ctx._deadline
                if deadline is not None and deadline < overrun_before:
                    continue
                leases[job_id] = ctx.job.attempt_token or ""
            for job, _ in list(worker._ready):
                leases[job.id] = job.attempt_token or ""
            leases.update(worker.outcomes.leases())
        except RuntimeError:
            continue
        given_back = worker._given_back
        return {k: v for k, v in leases.items() if k not in given_back}
    return {}


def make_guard(worker: Worker) -> StallGuard | None:
    """The stall guard, when the guard's thread can have a store of its own: a new one
    from the engine's URL, or the engine's own when it is thread-safe (memory)."""
    engine = worker.engine
    factory: Callable[[], Store]
    own = None if engine.store.thread_safe else engine.new_store()
    if engine.store.thread_safe:
        factory = lambda: engine.store  # noqa: E731
    elif own is not None:
        factory = lambda: own  # noqa: E731
    else:
        log.debug("worker %s: no stall guard (the store was given as an instance)", worker.id)
        return None
    return StallGuard(
        worker,
        store_factory=factory,
        # Never below a second: a busy machine pauses a loop for tenths of seconds.
        threshold=max(worker.heartbeat_interval, _STALL_MIN),
        give_back_after=max(2 * worker.heartbeat_interval, 2 * _STALL_MIN),
    )
