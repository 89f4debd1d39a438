"""The worker's outcome writer: the end of each attempt, written in batches.

Outcomes are buffered and written in batches by one task, so a busy worker does one store
round trip per batch, not per job. A batch the store refuses is written in halves, so one bad
outcome fails alone (:meth:`OutcomeWriter._settle`), and nothing is retried forever. Jobs
whose outcome waits keep their leases (the worker's heartbeats renew :meth:`leases`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from dispatch_core._tracebacks import format_error
from dispatch_core.context import JobContext
from dispatch_core.errors import FailJob, ResultError, StoreUnavailableError
from dispatch_core.models import Job, Outcome, OutcomeKind, utcnow
from dispatch_core.serde import storable_error
from dispatch_core.states import JobState

if TYPE_CHECKING:
    from dispatch_core.worker import Worker

__all__ = [
    "OutcomeWriter",
    "Entry",
    "JobLog",
    "log_dead_letter",
    "UndecodablePayload",
    "fail_reason",
    "error_text",
]

log = logging.getLogger("dispatch_core.worker")

_IDLE_BASE = 0.05  # first wait (s) between retries of a write; doubles
_STORE_RETRY_MAX = 5.0  # cap of the wait between retries when the store is unreachable
#: Times an outcome must fail alone, while the store answers other calls, before it counts as
#: refused and is replaced by a failure: once more for an error that says "data" (a flaky
#: driver gets a second chance), twice more for one that says "unavailable" (PostgreSQL reports
#: a value over its limits as an operational error, like a lost connection).
_REFUSED_STRIKES = 2
_SUSPECT_STRIKES = 3
_STORE_ERROR_CHARS = 300  # of a store's error, quoted in the error that replaces an outcome

Entry = tuple[Outcome, Job, float]  # an outcome to write, its job, the attempt's run time
JobLog = logging.Logger | logging.LoggerAdapter[logging.Logger]


class OutcomeWriter:
    """Buffers a worker's outcomes and writes them in batches; see the module docstring.

    Args:
        worker: The worker whose outcomes these are.
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        #: Outcomes waiting to be written, in order.
        self.pending: list[Entry] = []
        #: The batch being written; its jobs' leases are still renewed.
        self.writing: list[Entry] = []
        self.flushing = False
        #: Set when outcomes are added to an empty buffer (the writer waits only then).
        self.event = asyncio.Event()
        #: Set at shutdown: the writer returns once the buffer is empty.
        self.closing = False
        #: Failures alone of outcomes the store may be refusing, by (job id, attempt token).
        self.strikes: dict[tuple[str, str], int] = {}
        #: Why each failing job is dead-lettered, logged once the store has written it.
        self.dead_reasons: dict[str, tuple[JobLog, str]] = {}

    def add(self, outcome: Outcome, job: Job, elapsed: float) -> None:
        """Queue ``outcome`` of ``job`` (whose attempt ran ``elapsed`` seconds)."""
        if not self.pending:  # the writer waits only when the buffer is empty
            self.event.set()
        self.pending.append((outcome, job, elapsed))

    def idle(self) -> bool:
        """Whether nothing waits to be written and no write is under way."""
        return not self.pending and not self.flushing

    def leases(self) -> dict[str, str]:
        """The leases of jobs whose outcome waits: renewed until it is written, so that the
        leader never rescues (and runs again) a job that already ran."""
        return {o.job_id: o.attempt_token for o, _, _ in (*self.writing, *self.pending)}

    async def run(self) -> None:
        failures = 0
        while True:
            if not self.pending:
                if self.closing:
                    return
                self.event.clear()
                await self.event.wait()
                continue
            batch, self.pending = self.pending, []
            self.writing = batch
            self.flushing = True
            try:
                kept, exc = await self._write(batch)
            finally:
                self.flushing = False
                self.writing = []
            if exc is None or not kept:  # written, or refused and dealt with (_settle)
                failures = 0
                continue
            self.pending[:0] = kept  # keep them, in order, for the next try
            failures += 1
            if self.closing and failures > 5:
                log.error(
                    "worker %s: could not record %d outcomes (%s); their leases will "
                    "expire and the jobs will be rescued",
                    self.worker.id,
                    len(self.pending),
                    exc,
                )
                return
            delay = min(_IDLE_BASE * 2**failures, _STORE_RETRY_MAX)
            log.warning(
                "worker %s: recording %d outcomes failed (%s); retrying in %.2fs",
                self.worker.id,
                len(kept),
                exc,
                delay,
            )
            await asyncio.sleep(delay)

    async def _write(self, batch: list[Entry]) -> tuple[list[Entry], Exception | None]:
        """Write a batch of outcomes; return those to try again later, and the error met.

        A batch the store refuses is written in halves, so that every outcome it takes is
        written and the refused ones are replaced by failures (see :meth:`_settle`): one bad
        outcome never holds back the others.
        """
        try:
            written = await self.worker.bounded(
                self.worker.engine.store.finish([e[0] for e in batch], now=utcnow())
            )
        except Exception as exc:
            kept = await self._settle(batch, exc)
            if self.strikes:  # forget the outcomes that were written or replaced
                pending = {(e[0].job_id, e[0].attempt_token) for e in kept}
                self.strikes = {k: n for k, n in self.strikes.items() if k in pending}
            return kept, exc
        self.worker.store_ok()
        if self.strikes:
            self.strikes.clear()
        self._after_finish(batch, written)
        return [], None

    async def _settle(self, group: list[Entry], exc: Exception) -> list[Entry]:
        """Deal with a group of outcomes whose write failed with ``exc``; return those to keep.

        When the store does not answer a probe either, it is unavailable: the group is kept,
        to be written when it is back. When it does, it refuses something in the group: the
        halves are written apart, down to single outcomes. A single outcome that fails alone
        again and again (``_REFUSED_STRIKES``, ``_SUSPECT_STRIKES``) is replaced by a failure
        with a short error, or dropped when even that is refused. Every path ends in a bounded
        number of store calls.
        """
        if not await self._probe(group):
            return group
        if len(group) > 1:
            kept: list[Entry] = []
            mid = len(group) // 2
            for half in (group[:mid], group[mid:]):
                try:
                    written = await self.worker.bounded(
                        self.worker.engine.store.finish([e[0] for e in half], now=utcnow())
                    )
                except Exception as half_exc:
                    kept += await self._settle(half, half_exc)
                else:
                    self._after_finish(half, written)
            return kept
        outcome = group[0][0]
        key = (outcome.job_id, outcome.attempt_token)
        strikes = self.strikes.get(key, 0) + 1
        if strikes < (_SUSPECT_STRIKES if _unavailable(exc) else _REFUSED_STRIKES):
            self.strikes[key] = strikes
            return group
        self.strikes.pop(key, None)
        return await self._replace(group[0], exc)

    async def _probe(self, group: list[Entry]) -> bool:
        """Whether the store answers a call other than the failed write: a heartbeat that
        extends the leases of ``group``'s jobs."""
        try:
            await self.worker.bounded(
                self.worker.engine.store.heartbeat(
                    worker_id=self.worker.id,
                    leases={e[0].job_id: e[0].attempt_token for e in group},
                    lease_seconds=self.worker.lease_seconds,
                    now=utcnow(),
                )
            )
        except Exception:
            self.worker.store_failed()
            return False
        self.worker.store_ok()
        return True

    async def _replace(self, entry: Entry, exc: Exception) -> list[Entry]:
        """Write, in place of an outcome the store refuses, a failure with a short error
        (and no result); drop it when that is refused too. Returns what to keep."""
        outcome, job, elapsed = entry
        reason = storable_error(_first_line(f"{type(exc).__name__}: {exc}", _STORE_ERROR_CHARS))
        if outcome.kind is OutcomeKind.RELEASE:  # nothing in it to shorten
            log.error(
                "worker %s: the store refused to give job %s back (%s); dropping it: its lease "
                "will expire and the leader will rescue it",
                self.worker.id,
                job.id,
                reason,
            )
            return []
        if outcome.kind is OutcomeKind.COMPLETED:
            # Dead-lettered at once, as a result refused before the write (see _execute).
            error = f"ResultError: {ResultError(job.id, f'the store refused it ({reason})')}"
            replacement = attrs.evolve(outcome, kind=OutcomeKind.FAIL, result=None, error=error)
        else:  # a retry stays a retry: only its error text was refused
            error = (
                f"OutcomeError: the store refused the error recorded for attempt {job.attempt} "
                f"of job {job.id} ({reason}); the worker's log has it"
            )
            replacement = attrs.evolve(outcome, result=None, error=error)
        log.error(
            "worker %s: the store refused outcome %s of job %s (%s); recording this instead: %s",
            self.worker.id,
            outcome.kind.value,
            job.id,
            reason,
            error,
        )
        try:
            written = await self.worker.bounded(
                self.worker.engine.store.finish([replacement], now=utcnow())
            )
        except Exception as again:
            if _unavailable(again) and not await self._probe([entry]):
                return [(replacement, job, elapsed)]  # the store went away: write it later
            log.error(
                "worker %s: the store refused the failure written in place of outcome %s of "
                "job %s too (%s); dropping it: its lease will expire and the leader will "
                "rescue it",
                self.worker.id,
                outcome.kind.value,
                job.id,
                _first_line(f"{type(again).__name__}: {again}", _STORE_ERROR_CHARS),
            )
            return []
        self._after_finish([(replacement, job, elapsed)], written)
        return []

    def _after_finish(self, batch: list[Entry], written: list[bool]) -> None:
        hooks = self.worker.engine.hooks
        stats = self.worker.stats
        engine = self.worker.engine
        rewake = False
        for (outcome, job, elapsed), ok in zip(batch, written, strict=True):
            kind = outcome.kind
            dead = self.dead_reasons.pop(job.id, None) if kind is OutcomeKind.FAIL else None
            if not ok:
                stats.lost += 1
                log.warning(
                    "worker %s: outcome %s of job %s discarded: its lease was lost (cancelled "
                    "or rescued)",
                    self.worker.id,
                    kind.value,
                    job.id,
                )
                continue
            if kind is OutcomeKind.COMPLETED:
                stats.completed += 1
                if hooks.wants("dispatch_job_completed"):
                    done = attrs.evolve(
                        job,
                        state=JobState.COMPLETED,
                        result=outcome.result,
                        worker_id=None,
                        attempt_token=None,
                        lease_expires_at=None,
                    )
                    hooks.emit("dispatch_job_completed", job=done, elapsed=elapsed, engine=engine)
            elif kind is OutcomeKind.RETRY:
                stats.retried += 1
                rewake = True
                if hooks.wants("dispatch_job_retrying") and outcome.run_at is not None:
                    retrying = attrs.evolve(
                        job,
                        state=JobState.RETRYING,
                        last_error=outcome.error,
                        run_at=outcome.run_at,
                        worker_id=None,
                        attempt_token=None,
                        lease_expires_at=None,
                    )
                    hooks.emit(
                        "dispatch_job_retrying",
                        job=retrying,
                        attempt=job.attempt,
                        next_run_at=outcome.run_at,
                        engine=engine,
                    )
            elif kind is OutcomeKind.FAIL:
                stats.failed += 1
                if dead is not None:  # logged now that the store holds the dead letter
                    log_dead_letter(dead[0], job, dead[1], outcome.error or "")
                failed = attrs.evolve(
                    job,
                    state=JobState.FAILED,
                    last_error=outcome.error,
                    worker_id=None,
                    attempt_token=None,
                    lease_expires_at=None,
                )
                self.emit_failure(failed, outcome.error or "")
            else:
                stats.released += 1
                rewake = True
        if rewake or self.worker.draining:  # a drain re-checks for work once outcomes are stored
            self.worker.wake()

    def emit_failure(self, job: Job, error: str) -> None:
        hooks = self.worker.engine.hooks
        if hooks.wants("dispatch_job_failed"):
            hooks.emit("dispatch_job_failed", job=job, error=error, engine=self.worker.engine)
        if hooks.wants("dispatch_job_dead_lettered"):
            hooks.emit(
                "dispatch_job_dead_lettered", job=job, error=error, engine=self.worker.engine
            )

    def report_rescued(self, rescued: Sequence[Job]) -> None:
        """Count, log and announce jobs this worker (as leader) took back from dead workers."""
        worker = self.worker
        hooks = worker.engine.hooks
        worker.stats.rescued += len(rescued)
        for job in rescued:
            if job.state is JobState.FAILED:
                log_dead_letter(
                    JobContext(job, worker.engine, worker.id).log,  # the job's logger and fields
                    job,
                    f"worker {worker.id} took it back with no attempts left",
                    job.last_error or "",
                )
            else:
                log.warning(
                    "worker %s: took back job %s (%s) -> %s: %s",
                    worker.id,
                    job.id,
                    job.name,
                    job.state.value,
                    job.last_error,
                )
            if hooks.wants("dispatch_job_rescued"):
                hooks.emit("dispatch_job_rescued", job=job, engine=worker.engine)
            if job.state is JobState.RETRYING:
                if hooks.wants("dispatch_job_retrying"):
                    hooks.emit(
                        "dispatch_job_retrying",
                        job=job,
                        attempt=job.attempt,
                        next_run_at=job.run_at,
                        engine=worker.engine,
                    )
            else:
                self.emit_failure(job, job.last_error or "")
        worker.engine.producer.wake()


def _unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the store cannot be reached (rather than that it refuses data)."""
    return isinstance(exc, StoreUnavailableError | OSError)


def _first_line(text: str, limit: int) -> str:
    """The first line of ``text``, cut to ``limit`` characters."""
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def log_dead_letter(
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    job: Job,
    reason: str,
    error: str,
) -> None:
    """Log a job that failed for good, with its stored error (type, message, traceback)."""
    logger.warning(
        "job %s (%s) failed for good on attempt %d/%d (%s) and was dead-lettered: %s",
        job.id,
        job.name,
        job.attempt,
        job.max_attempts,
        reason,
        error or "(no error recorded)",
    )


# -- why an attempt failed ------------------------------------------------------------


class UndecodablePayload(FailJob):
    """The stored payload does not fit the handler's type (the cause says where)."""

    def __init__(self) -> None:
        super().__init__("its payload does not fit the handler's type")


def fail_reason(exc: Exception) -> str:
    """Why a job is dead-lettered, for the log."""
    if isinstance(exc, UndecodablePayload):
        return "its payload does not fit the handler's type"
    if isinstance(exc, FailJob):
        return "it raised FailJob"
    return "no attempts left"


def error_text(exc: BaseException) -> str:
    """The error recorded for a failed attempt. It is always storable (lone surrogates
    escaped, size bounded) and always made, even when the exception's ``__str__`` raises: a
    failure must always be recordable."""
    try:
        text = format_error(exc)
    except Exception:
        text = f"{type(exc).__name__}: (its message could not be read)"
    return storable_error(text)
