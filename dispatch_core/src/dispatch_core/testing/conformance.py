"""The store conformance suite: abstract pytest classes every store backend subclasses.

A backend proves itself by providing one fixture, ``store_factory``: a callable returning a
new, *unopened* store instance on the same empty database each time it is called during one
test (several instances on one database stand for several worker processes)::

    from dispatch_core.testing import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store_factory(self, tmp_path):
            return lambda: MyStore(f"mystore://{tmp_path}/db")

The tests are plain synchronous pytest functions that drive the store with ``asyncio.run``,
so the suite needs no asyncio plugin.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from dispatch_core._ids import new_id
from dispatch_core.errors import DLQEntryNotFoundError, InvalidTransitionError, JobNotFoundError
from dispatch_core.models import DLQFilter, Job, JobFilter, Outcome, OutcomeKind, utcnow
from dispatch_core.states import JobState
from dispatch_core.store import Store
from dispatch_core.testing._helpers import LEASE, StoreFactory, _claim, _run, make_new_job
from dispatch_core.testing.conformance_cluster import ClusterConformance
from dispatch_core.testing.conformance_listing import ListingConformance
from dispatch_core.testing.conformance_previews import PreviewConformance
from dispatch_core.testing.conformance_workflows import WorkflowConformance

__all__ = ["StoreConformance", "make_new_job"]


class StoreConformance(
    ClusterConformance, WorkflowConformance, ListingConformance, PreviewConformance
):
    """Every rule of :class:`dispatch_core.store.Store`, as tests. Subclass and give
    ``store_factory``. The cluster rules (workers, leader, cron, queues, retention) come from
    :class:`~dispatch_core.testing.conformance_cluster.ClusterConformance`."""

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        raise NotImplementedError("a conformance subclass must define the store_factory fixture")

    # -- enqueue and read -----------------------------------------------------------------------

    def test_enqueue_round_trips_every_field(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            new = make_new_job(
                payload={"to": "a@example.com", "n": [1, 2.5, None, True]},
                priority=7,
                tenant="acme",
                headers={"traceparent": "00-abc-def-01"},
                timeout=12.5,
                max_attempts=6,
            )
            (job,) = await store.enqueue([new])
            got = await store.get_job(new.id)
            for j in (job, got):
                assert j.id == new.id
                assert j.state is JobState.PENDING
                assert j.payload == new.payload
                assert j.priority == 7
                assert j.tenant == "acme"
                assert j.headers == {"traceparent": "00-abc-def-01"}
                assert j.timeout == 12.5
                assert j.max_attempts == 6
                assert j.attempt == 0
                assert abs((j.run_at - new.run_at).total_seconds()) < 0.002
                assert j.run_at.tzinfo is not None

        _run(store_factory, body)

    def test_get_unknown_job_raises(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            with pytest.raises(JobNotFoundError):
                await store.get_job("job_01h455vb4pex5vsknk084sn02q")

        _run(store_factory, body)

    def test_unique_key_returns_existing_job(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            (first,) = await store.enqueue([make_new_job(unique_key="welcome-1")])
            a, b = await store.enqueue(
                [make_new_job(unique_key="welcome-1"), make_new_job(unique_key="welcome-2")]
            )
            assert a.id == first.id
            assert b.id != first.id
            assert len(await store.list_jobs(JobFilter())) == 2

        _run(store_factory, body)

    def test_bulk_enqueue_keeps_order(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            news = [make_new_job(payload={"i": i}) for i in range(250)]
            jobs = await store.enqueue(news)
            assert [j.id for j in jobs] == [n.id for n in news]
            counts = await store.count_jobs()
            assert counts.get(JobState.PENDING) == 250

        _run(store_factory, body)

    # -- claim -----------------------------------------------------------------------------------

    def test_claim_orders_by_priority_then_run_at(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            now = utcnow()
            older = make_new_job(run_at=now - timedelta(seconds=10))
            newer = make_new_job(run_at=now - timedelta(seconds=5))
            urgent = make_new_job(priority=10, run_at=now - timedelta(seconds=1))
            low = make_new_job(priority=-5, run_at=now - timedelta(seconds=60))
            await store.enqueue([newer, low, older, urgent])
            claimed = await _claim(store, limit=10)
            assert [j.id for j in claimed] == [urgent.id, older.id, newer.id, low.id]

        _run(store_factory, body)

    def test_claim_stamps_the_lease(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.enqueue([make_new_job()])
            now = utcnow()
            (job,) = await _claim(store, worker_id="wkr_a", now=now)
            assert job.state is JobState.RUNNING
            assert job.attempt == 1
            assert job.worker_id == "wkr_a"
            assert job.attempt_token
            assert job.lease_expires_at is not None
            assert abs((job.lease_expires_at - now).total_seconds() - LEASE) < 0.01
            stored = await store.get_job(job.id)
            assert stored.state is JobState.RUNNING
            assert stored.attempt_token == job.attempt_token
            assert await _claim(store) == []

        _run(store_factory, body)

    def test_claim_respects_limit_queues_and_names(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.enqueue(
                [make_new_job("a", queue="q1") for _ in range(3)]
                + [make_new_job("b", queue="q1"), make_new_job("a", queue="q2")]
            )
            assert len(await _claim(store, limit=2, queues=["q1"], names=["a"])) == 2
            rest = await _claim(store, limit=10, queues=["q1"], names=["a"])
            assert [(j.name, j.queue) for j in rest] == [("a", "q1")]
            # the unknown name stays for a worker that knows it
            assert [j.name for j in await _claim(store, queues=["q1"], names=["a"])] == []
            assert [j.name for j in await _claim(store, queues=["q1"])] == ["b"]
            assert [j.queue for j in await _claim(store)] == ["q2"]

        _run(store_factory, body)

    def test_run_at_in_the_future_is_not_claimed(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            later = utcnow() + timedelta(hours=1)
            await store.enqueue([make_new_job(run_at=later)])
            assert await _claim(store) == []
            due = await store.next_run_at(queues=None, names=None)
            assert due is not None
            assert abs((due - later).total_seconds()) < 0.002
            claimed = await _claim(store, now=later + timedelta(seconds=1))
            assert len(claimed) == 1

        _run(store_factory, body)

    def test_concurrent_claimers_get_disjoint_jobs(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            total = 300
            await store.enqueue([make_new_job(payload={"i": i}) for i in range(total)])
            others = [store_factory() for _ in range(3)]
            for other in others:
                await other.open()
            claimers = [store, *others]
            seen: list[str] = []

            async def claimer(s: Store, wid: str) -> None:
                while True:
                    got = await _claim(s, limit=7, worker_id=wid)
                    if not got:
                        return
                    seen.extend(j.id for j in got)
                    await asyncio.sleep(0)

            try:
                await asyncio.gather(
                    *(claimer(s, f"wkr_{i}_{k}") for i, s in enumerate(claimers) for k in range(2))
                )
            finally:
                for other in others:
                    await other.close()
            assert len(seen) == total
            assert len(set(seen)) == total

        _run(store_factory, body)

    # -- fencing, heartbeats and outcomes ---------------------------------------------------------

    def test_complete_with_current_token(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.enqueue([make_new_job()])
            (job,) = await _claim(store)
            assert job.attempt_token is not None
            ok = await store.finish(
                [
                    Outcome(
                        job_id=job.id,
                        attempt_token=job.attempt_token,
                        kind=OutcomeKind.COMPLETED,
                        result={"sent": True},
                    )
                ],
                now=utcnow(),
            )
            assert ok == [True]
            done = await store.get_job(job.id)
            assert done.state is JobState.COMPLETED
            assert done.result == {"sent": True}
            assert done.finished_at is not None
            assert done.attempt_token is None

        _run(store_factory, body)

    def test_stale_attempt_token_is_refused(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.enqueue([make_new_job()])
            (job,) = await _claim(store)
            now = utcnow()
            refused = await store.finish(
                [Outcome(job_id=job.id, attempt_token="not-the-token", kind=OutcomeKind.COMPLETED)],
                now=now,
            )
            assert refused == [False]
            lost = await store.heartbeat(
                worker_id="wkr_test", leases={job.id: "not-the-token"}, lease_seconds=LEASE, now=now
            )
            assert lost == {job.id}
            assert (await store.get_job(job.id)).state is JobState.RUNNING

        _run(store_factory, body)

    def test_finish_batch_mixes_outcomes(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.enqueue([make_new_job(payload={"i": i}) for i in range(4)])
            a, b, c, d = await _claim(store, limit=4)
            now = utcnow()

            def tok(j: Job) -> str:
                assert j.attempt_token is not None
                return j.attempt_token

            ok = await store.finish(
                [
                    Outcome(job_id=a.id, attempt_token=tok(a), kind=OutcomeKind.COMPLETED),
                    Outcome(
                        job_id=b.id,
                        attempt_token=tok(b),
                        kind=OutcomeKind.RETRY,
                        error="boom",
                        run_at=now + timedelta(hours=1),
                    ),
                    Outcome(job_id=c.id, attempt_token=tok(c), kind=OutcomeKind.FAIL, error="dead"),
                    Outcome(job_id=d.id, attempt_token="stale", kind=OutcomeKind.COMPLETED),
                ],
                now=now,
            )
            assert ok == [True, True, True, False]
            assert (await store.get_job(a.id)).state is JobState.COMPLETED
            rb = await store.get_job(b.id)
            assert rb.state is JobState.RETRYING
            assert rb.last_error == "boom"
            assert (await store.get_job(c.id)).state is JobState.FAILED
            assert [e.job_id for e in await store.list_dlq(DLQFilter())] == [c.id]
            assert (await store.get_job(d.id)).state is JobState.RUNNING

        _run(store_factory, body)

    def test_heartbeat_extends_the_lease(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.enqueue([make_new_job()])
            t0 = utcnow()
            (job,) = await _claim(store, now=t0, lease_seconds=10)
            assert job.attempt_token is not None
            lost = await store.heartbeat(
                worker_id="wkr_test",
                leases={job.id: job.attempt_token},
                lease_seconds=10,
                now=t0 + timedelta(seconds=8),
            )
            assert lost == set()
            # past the first lease, inside the extended one: nothing to rescue
            assert await store.rescue_expired(now=t0 + timedelta(seconds=12)) == []
            rescued = await store.rescue_expired(now=t0 + timedelta(seconds=19))
            assert [j.id for j in rescued] == [job.id]

        _run(store_factory, body)

    def test_expired_lease_is_rescued_and_counted(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.enqueue([make_new_job(max_attempts=2)])
            t0 = utcnow()
            (job,) = await _claim(store, now=t0, lease_seconds=5)
            later = t0 + timedelta(seconds=6)
            (rescued,) = await store.rescue_expired(now=later)
            assert rescued.state is JobState.RETRYING
            assert rescued.attempt == 1
            # no worker row says otherwise: it died or stalled, and the text says which worker
            assert rescued.last_error == (
                f"worker {job.worker_id} died or stalled: its lease expired without a heartbeat"
            )
            # the dead worker's late write is fenced out
            assert job.attempt_token is not None
            assert await store.finish(
                [
                    Outcome(
                        job_id=job.id, attempt_token=job.attempt_token, kind=OutcomeKind.COMPLETED
                    )
                ],
                now=later,
            ) == [False]
            (again,) = await _claim(store, now=later, lease_seconds=5)
            assert again.attempt == 2
            assert again.attempt_token != job.attempt_token
            # the second expiry exhausts the attempts: failed and dead-lettered
            (final,) = await store.rescue_expired(now=later + timedelta(seconds=6))
            assert final.state is JobState.FAILED
            assert (await store.get_job(job.id)).state is JobState.FAILED
            (entry,) = await store.list_dlq(DLQFilter())
            assert entry.job_id == job.id
            assert entry.attempts == 2

        _run(store_factory, body)

    def test_retried_job_becomes_claimable_again(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.enqueue([make_new_job()])
            t0 = utcnow()
            (job,) = await _claim(store, now=t0)
            assert job.attempt_token is not None
            retry_at = t0 + timedelta(seconds=30)
            await store.finish(
                [
                    Outcome(
                        job_id=job.id,
                        attempt_token=job.attempt_token,
                        kind=OutcomeKind.RETRY,
                        error="flaky",
                        run_at=retry_at,
                    )
                ],
                now=t0,
            )
            assert await _claim(store, now=t0 + timedelta(seconds=1)) == []
            nxt = await store.next_run_at(queues=None, names=None)
            assert nxt is not None
            assert abs((nxt - retry_at).total_seconds()) < 0.002
            (again,) = await _claim(store, now=retry_at + timedelta(seconds=1))
            assert again.id == job.id
            assert again.attempt == 2

        _run(store_factory, body)

    def test_release_gives_the_attempt_back(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.enqueue([make_new_job()])
            (job,) = await _claim(store)
            assert job.attempt_token is not None
            assert await store.finish(
                [Outcome(job_id=job.id, attempt_token=job.attempt_token, kind=OutcomeKind.RELEASE)],
                now=utcnow(),
            ) == [True]
            released = await store.get_job(job.id)
            assert released.state is JobState.PENDING
            assert released.attempt == 0
            (again,) = await _claim(store)
            assert again.attempt == 1

        _run(store_factory, body)

    # -- cancel, retry and the state machine ---------------------------------------------------

    def test_cancel_pending_job(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            (job,) = await store.enqueue([make_new_job()])
            cancelled = await store.cancel(job.id, now=utcnow())
            assert cancelled.state is JobState.CANCELLED
            assert (await store.get_job(job.id)).state is JobState.CANCELLED
            assert await _claim(store) == []

        _run(store_factory, body)

    def test_cancel_running_job_fences_the_worker(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.enqueue([make_new_job()])
            (job,) = await _claim(store)
            assert job.attempt_token is not None
            now = utcnow()
            await store.cancel(job.id, now=now)
            lost = await store.heartbeat(
                worker_id="wkr_test",
                leases={job.id: job.attempt_token},
                lease_seconds=LEASE,
                now=now,
            )
            assert lost == {job.id}
            assert await store.finish(
                [
                    Outcome(
                        job_id=job.id, attempt_token=job.attempt_token, kind=OutcomeKind.COMPLETED
                    )
                ],
                now=now,
            ) == [False]
            assert (await store.get_job(job.id)).state is JobState.CANCELLED

        _run(store_factory, body)

    def test_illegal_transitions_raise(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            (pending,) = await store.enqueue([make_new_job()])
            with pytest.raises(InvalidTransitionError):
                await store.retry(pending.id, now=utcnow())
            (job,) = await _claim(store)
            assert job.attempt_token is not None
            with pytest.raises(InvalidTransitionError):
                await store.retry(job.id, now=utcnow())
            await store.finish(
                [
                    Outcome(
                        job_id=job.id, attempt_token=job.attempt_token, kind=OutcomeKind.COMPLETED
                    )
                ],
                now=utcnow(),
            )
            with pytest.raises(InvalidTransitionError):
                await store.cancel(job.id, now=utcnow())
            with pytest.raises(InvalidTransitionError):
                await store.retry(job.id, now=utcnow())
            assert (await store.get_job(job.id)).state is JobState.COMPLETED
            with pytest.raises(JobNotFoundError):
                await store.cancel("job_01h455vb4pex5vsknk084sn02q", now=utcnow())

        _run(store_factory, body)

    def test_retry_failed_job_by_hand(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.enqueue([make_new_job(max_attempts=1)])
            (job,) = await _claim(store)
            assert job.attempt_token is not None
            await store.finish(
                [
                    Outcome(
                        job_id=job.id,
                        attempt_token=job.attempt_token,
                        kind=OutcomeKind.FAIL,
                        error="nope",
                    )
                ],
                now=utcnow(),
            )
            again = await store.retry(job.id, now=utcnow())
            assert again.state is JobState.PENDING
            assert again.attempt == 0
            (claimed,) = await _claim(store)
            assert claimed.id == job.id

        _run(store_factory, body)

    # -- dead-letter queue ---------------------------------------------------------------------

    def test_dlq_round_trip(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.enqueue(
                [
                    make_new_job(
                        "mail",
                        queue="emails",
                        payload={"to": "x"},
                        priority=3,
                        max_attempts=1,
                        tenant="acme",
                    )
                ]
            )
            (job,) = await _claim(store)
            assert job.attempt_token is not None
            failed_at = utcnow()
            await store.finish(
                [
                    Outcome(
                        job_id=job.id,
                        attempt_token=job.attempt_token,
                        kind=OutcomeKind.FAIL,
                        error="smtp down",
                    )
                ],
                now=failed_at,
            )
            (entry,) = await store.list_dlq(DLQFilter(queue="emails"))
            assert await store.list_dlq(DLQFilter(queue="other")) == []
            assert entry.id.startswith("dlq_")
            assert (entry.job_id, entry.name, entry.error) == (job.id, "mail", "smtp down")
            assert entry.payload == {"to": "x"}
            assert entry.attempts == 1
            assert entry.tenant == "acme"
            got = await store.get_dlq(entry.id)
            assert got.job_id == job.id
            with pytest.raises(DLQEntryNotFoundError):
                await store.get_dlq("dlq_01h455vb4pex5vsknk084sn02q")

            new_id_ = new_id("job")
            replayed = await store.replay_dlq(entry.id, new_job_id=new_id_, now=utcnow())
            assert replayed.id == new_id_
            assert replayed.state is JobState.PENDING
            assert (replayed.name, replayed.queue, replayed.payload) == (
                "mail",
                "emails",
                {"to": "x"},
            )
            assert replayed.attempt == 0
            assert replayed.priority == 3
            marked = await store.get_dlq(entry.id)
            assert marked.replayed_at is not None
            assert marked.replay_job_id == new_id_
            (claimed,) = await _claim(store)
            assert claimed.id == new_id_

            # purge only takes what failed before the cutoff
            assert await store.purge_dlq(before=failed_at - timedelta(seconds=1)) == 0
            assert await store.purge_dlq(before=failed_at + timedelta(seconds=1)) == 1
            assert await store.list_dlq(DLQFilter()) == []

        _run(store_factory, body)

    # -- listing -------------------------------------------------------------------------------

    def test_list_and_count_jobs(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.enqueue(
                [
                    make_new_job("a", queue="q1"),
                    make_new_job("b", queue="q2", tenant="t1"),
                    make_new_job("a", queue="q2"),
                ]
            )
            await _claim(store, limit=1, queues=["q1"])
            every = await store.list_jobs(JobFilter())
            assert len(every) == 3
            assert [j.id for j in every] == sorted((j.id for j in every), reverse=True)
            assert len(await store.list_jobs(JobFilter(state=JobState.PENDING))) == 2
            assert len(await store.list_jobs(JobFilter(queue="q2"))) == 2
            assert len(await store.list_jobs(JobFilter(name="a"))) == 2
            assert len(await store.list_jobs(JobFilter(tenant="t1"))) == 1
            assert len(await store.list_jobs(JobFilter(limit=2))) == 2
            assert len(await store.list_jobs(JobFilter(limit=2, offset=2))) == 1
            counts = await store.count_jobs()
            assert counts.get(JobState.PENDING) == 2
            assert counts.get(JobState.RUNNING) == 1
            assert (await store.count_jobs(queue="q2")).get(JobState.PENDING) == 2

        _run(store_factory, body)

    # -- the sync producer ---------------------------------------------------------------------

    def test_sync_producer_if_offered(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            sync = store.sync()
            if sync is None:
                pytest.skip("this store offers no sync producer")

            def produce() -> tuple[Job, Job, Job]:
                (first,) = sync.enqueue([make_new_job(unique_key="k1")])
                (dup,) = sync.enqueue([make_new_job(unique_key="k1")])
                cancelled = sync.cancel(first.id)
                return first, dup, cancelled

            try:
                first, dup, cancelled = await asyncio.to_thread(produce)
            finally:
                await asyncio.to_thread(sync.close)
            assert dup.id == first.id
            assert cancelled.state is JobState.CANCELLED
            assert (await store.get_job(first.id)).state is JobState.CANCELLED
            (second,) = await asyncio.to_thread(lambda: store.sync().enqueue([make_new_job()]))  # type: ignore[union-attr]
            assert (await store.get_job(second.id)).state is JobState.PENDING

        _run(store_factory, body)
