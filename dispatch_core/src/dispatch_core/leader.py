"""The leader's duties: rescue, cron and retention, run by whichever worker holds the lease.

Every worker runs a :class:`LeaderDuties` task. Each tick it tries to take or renew the leader
lease in the store (an atomic operation); the one worker that holds it rescues the jobs of dead
workers, fires the cron entries that are due and, now and then, prunes old rows. A leader that
cannot renew in time stops acting as leader before its lease runs out, so two workers never act
as leader at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import attrs

from dispatch_core._ids import new_id
from dispatch_core.cluster import WorkerState
from dispatch_core.cron import CronEntry, MisfirePolicy, cron_unique_key
from dispatch_core.models import NewJob, utcnow

if TYPE_CHECKING:
    from dispatch_core.engine import Engine
    from dispatch_core.worker import Worker

__all__ = ["LeaderDuties", "cron_new_job", "take_over"]

log = logging.getLogger("dispatch_core.leader")

_CRON_REFRESH = 5.0  # seconds between re-reads of the cron entries by the leader
#: A worker timeout (s) that no worker's silence reaches: a rescue pass with it declares no
#: worker dead, and takes back only the jobs of workers already dead or stopped.
_NOBODY_SILENT_SO_LONG = 10 * 365 * 86400.0


class LeaderDuties:
    """Leader election and the leader's work, for one worker.

    Args:
        worker: The worker this runs in (its store, engine, id and liveness settings).
        ttl: Seconds the leader lease lasts without renewal.
        interval: Seconds between lease renewals and rescue passes.
    """

    def __init__(self, worker: Worker, *, ttl: float, interval: float) -> None:
        self.worker = worker
        self.engine = worker.engine
        self.ttl = ttl
        self.interval = interval
        self.is_leader = False
        #: Monotonic time until which this worker may act as leader.
        self._lead_until = 0.0
        self._entries: list[CronEntry] = []
        self._entries_read = 0.0
        self._last_prune = 0.0
        self._unknown_jobs_logged: set[str] = set()

    async def run(self) -> None:
        """Contend for the lease and do the leader's work until cancelled."""
        try:
            while True:
                started = time.monotonic()
                await self._step()
                elapsed = time.monotonic() - started
                await asyncio.sleep(self._pause(max(self.interval - elapsed, 0.0)))
        finally:
            if self.is_leader:
                self.is_leader = False
                log.info("worker %s: no longer the leader (stopping)", self.worker.id)

    def _pause(self, default: float) -> float:
        """Sleep until the next cron tick when it comes before the next renewal."""
        if not self.is_leader or not self._entries:
            return default
        now = utcnow()
        due = [e.next_run_at for e in self._entries if e.enabled]
        if not due:
            return default
        until = (min(due) - now).total_seconds()
        return min(default, max(until, 0.01))

    async def _defer_to_seasoned_peers(self) -> bool:
        """Whether this worker, too new to rescue (it has not had a worker timeout of store
        contact yet), should leave the lease to a live worker that has.

        A new leader must wait that long before it may declare anyone dead; an older peer
        may do it at once, so the jobs of a dead leader come back sooner.
        """
        worker = self.worker
        if self.is_leader or worker.store_contact_for(worker.worker_timeout):
            return False
        now = utcnow()
        seasoned = timedelta(seconds=worker.worker_timeout)
        try:
            rows = await worker.bounded(self.engine.store.list_workers())
        except Exception:
            return False
        return any(
            row.id != worker.id
            and row.state is WorkerState.RUNNING
            and now - row.started_at > seasoned
            and now - row.last_seen < seasoned
            for row in rows
        )

    async def _step(self) -> None:
        store = self.engine.store
        if await self._defer_to_seasoned_peers():
            return
        asked = time.monotonic()
        try:
            leader = await self.worker.bounded(
                store.acquire_leadership(worker_id=self.worker.id, ttl=self.ttl, now=utcnow())
            )
        except Exception as exc:
            self.worker.store_failed()
            log.warning("worker %s: leader election failed (%s)", self.worker.id, exc)
            leader = self.is_leader and time.monotonic() < self._lead_until
            if not leader and self.is_leader:
                self._lose("the store is unreachable")
            return
        if not leader:
            if self.is_leader:
                self._lose("another worker holds the lease")
            return
        # Count the lease from when we asked, so our view expires before the store's does.
        self._lead_until = asked + self.ttl
        if not self.is_leader:
            self.is_leader = True
            self._entries_read = 0.0
            log.info("worker %s is now the leader", self.worker.id)
        await self._duties()

    def _lose(self, why: str) -> None:
        self.is_leader = False
        log.warning("worker %s: no longer the leader: %s", self.worker.id, why)

    def _still_leader(self) -> bool:
        return self.is_leader and time.monotonic() < self._lead_until

    async def _duties(self) -> None:
        for duty in (self._rescue, self._fire_cron, self._prune):
            if not self._still_leader():
                return
            try:
                await duty()
            except Exception as exc:
                log.warning("worker %s: leader duty %s failed (%s)", self.worker.id, duty, exc)

    # -- rescue ------------------------------------------------------------------------------------

    async def _rescue(self) -> None:
        worker = self.worker
        # After losing the store (or at start), wait until every live worker has had the time
        # to heartbeat again: otherwise a database restart would look like the whole cluster
        # dying, and running jobs would be rescued while their workers are fine.
        if not worker.store_contact_for(worker.worker_timeout):
            return
        rescued = await worker.bounded(
            self.engine.store.rescue_expired(now=utcnow(), worker_timeout=worker.worker_timeout)
        )
        if rescued:
            worker.outcomes.report_rescued(rescued)

    # -- cron --------------------------------------------------------------------------------------

    async def _fire_cron(self) -> None:
        store = self.engine.store
        if time.monotonic() - self._entries_read > _CRON_REFRESH:
            self._entries = await self.worker.bounded(store.list_cron())
            self._entries_read = time.monotonic()
        now = utcnow()
        stale = False
        fired = False
        for i, entry in enumerate(self._entries):
            if not entry.enabled or entry.next_run_at > now or not self._still_leader():
                continue
            tick = entry.next_run_at
            following = entry.schedule().next_after(max(now, tick))
            job: NewJob | None = cron_new_job(
                self.engine, entry, tick=tick, now=now, logged=self._unknown_jobs_logged
            )
            if entry.misfire is MisfirePolicy.SKIP:
                late = (now - tick).total_seconds()
                if late > entry.misfire_grace:
                    log.info(
                        "cron %s: skipping the tick of %s (%.0fs late, misfire policy skip)",
                        entry.name,
                        tick.isoformat(),
                        late,
                    )
                    job = None
            with self.engine.producer.scope((job,) if job is not None else ()):
                result = await self.worker.bounded(
                    store.fire_cron(
                        name=entry.name, tick=tick, next_run_at=following, job=job, now=now
                    )
                )
            if result is None and job is not None:
                stale = True  # someone changed the entry (or fired it): re-read
                continue
            self._entries[i] = _advanced(entry, following, now, result.id if result else None)
            if result is not None:
                fired = True
                log.info("cron %s fired for %s: job %s", entry.name, tick.isoformat(), result.id)
                if self.engine.hooks.wants("dispatch_cron_fired"):
                    self.engine.hooks.emit(
                        "dispatch_cron_fired",
                        entry_name=entry.name,
                        job_id=result.id,
                        engine=self.engine,
                    )
        if stale:
            self._entries_read = 0.0
        if fired:
            self.engine.producer.wake()

    # -- retention ---------------------------------------------------------------------------------

    async def _prune(self) -> None:
        retention = self.engine.retention
        if retention is None or time.monotonic() - self._last_prune < retention.interval:
            return
        self._last_prune = time.monotonic()
        deleted = await self.worker.bounded(
            self.engine.store.prune(retention.cutoffs(utcnow()), limit=retention.batch)
        )
        if deleted:
            log.info("worker %s: pruned %d old rows", self.worker.id, deleted)
            if deleted >= retention.batch:
                self._last_prune = 0.0  # more to do: go on at the next tick


def _advanced(
    entry: CronEntry, following: datetime, now: datetime, job_id: str | None
) -> CronEntry:
    if job_id is None:
        return attrs.evolve(entry, next_run_at=following)
    return attrs.evolve(entry, next_run_at=following, last_run_at=now, last_job_id=job_id)


def cron_new_job(
    engine: Engine,
    entry: CronEntry,
    *,
    tick: datetime | None,
    now: datetime,
    logged: set[str] | None = None,
) -> NewJob:
    """The job an entry enqueues: for a ``tick`` (keyed so it is written once), or, with
    ``tick=None``, a manual trigger. The job's options come from its definition when this
    process knows it, else from the defaults."""
    definition = engine.jobs.get(entry.job_name)
    headers = {"dispatch-cron": entry.name}
    if tick is not None:
        headers["dispatch-cron-tick"] = tick.isoformat()
    if definition is None:
        if logged is not None and entry.job_name not in logged:
            logged.add(entry.job_name)
            log.warning(
                "cron %s enqueues job %r, which this process does not know; using the "
                "default options",
                entry.name,
                entry.job_name,
            )
        return NewJob(
            id=new_id("job"),
            name=entry.job_name,
            queue=entry.queue or "default",
            payload=entry.payload,
            priority=0,
            max_attempts=4,
            timeout=300.0,
            run_at=now,
            created_at=now,
            unique_key=cron_unique_key(entry.name, tick) if tick is not None else None,
            headers=headers,
        )
    return engine.producer.new_job(
        definition,
        entry.payload,
        queue=entry.queue,
        unique_key=cron_unique_key(entry.name, tick) if tick is not None else None,
        headers=headers,
        now=now,
    )


async def take_over(worker: Worker) -> None:
    """Take back at once the jobs that an earlier worker with this id (a restart with a
    fixed ``worker_id``) still holds: they died with it, and waiting for their leases to
    expire would only delay them."""
    store = worker.engine.store
    rows = await worker.bounded(store.list_workers())
    earlier = next((w for w in rows if w.id == worker.id), None)
    if earlier is None:
        return
    await worker.bounded(store.deregister_worker(worker.id, now=utcnow()))
    # A worker timeout no live worker can reach: nobody is declared dead by this call
    # (only a leader with store contact may do that); the jobs of dead and stopped
    # workers, this id's included now, are rescued whatever their leases say.
    rescued = await worker.bounded(
        store.rescue_expired(now=utcnow(), worker_timeout=_NOBODY_SILENT_SO_LONG)
    )
    if rescued:
        log.warning(
            "worker %s: an earlier worker with this id (pid %d on %s, last seen %s) left "
            "%s running; took them back",
            worker.id,
            earlier.pid,
            earlier.hostname,
            earlier.last_seen.isoformat(timespec="seconds"),
            f"{len(rescued)} job{'' if len(rescued) == 1 else 's'}",
        )
        worker.outcomes.report_rescued(rescued)
