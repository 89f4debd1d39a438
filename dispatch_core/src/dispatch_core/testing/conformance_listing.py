"""Conformance rules of the operator's reads: keyset pages, tenant filters, counts, purges in
batches and throughput buckets (what the admin API and the dashboard are built on), and the
tenant scope of unique keys (what keeps one tenant's enqueue from returning another's job)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import attrs
import pytest

from dispatch_core._ids import new_id
from dispatch_core.errors import JobIdTakenError
from dispatch_core.models import (
    DLQFilter,
    Job,
    JobFilter,
    NewJob,
    OutcomeKind,
    RunnableCount,
    SortOrder,
    ThroughputBucket,
    utcnow,
)
from dispatch_core.states import JobState
from dispatch_core.store import Store
from dispatch_core.testing._helpers import StoreFactory, _claim, _finish, _run, make_new_job
from dispatch_core.testing._workflow_helpers import _driver, _key, _start
from dispatch_core.workflows.models import NewEvent, RunFilter, RunState

__all__ = ["ListingConformance"]


async def _walk_jobs(store: Store, filter: JobFilter) -> list[str]:
    """Every id ``filter`` selects, page by page through the ``after`` cursor."""
    ids: list[str] = []
    after: str | None = None
    while True:
        page = await store.list_jobs(attrs.evolve(filter, after=after))
        ids.extend(j.id for j in page)
        if len(page) < filter.limit:
            return ids
        after = page[-1].id


async def _dead_letter(
    store: Store, n: int, *, tenant: str, queue: str, name: str = "conformance.job"
) -> list[str]:
    """Enqueue ``n`` jobs and fail each for good, one after another; return the job ids."""
    ids: list[str] = []
    for _ in range(n):
        new = make_new_job(name, max_attempts=1, tenant=tenant, queue=queue)
        (job,) = await store.enqueue([new])
        (claimed,) = await _claim(store, limit=1, names={job.name})
        assert claimed.id == job.id
        assert await _finish(store, claimed, OutcomeKind.FAIL, now=utcnow(), error="boom")
        ids.append(job.id)
    return ids


async def _all_jobs(store: Store) -> list[Job]:
    return await store.list_jobs(JobFilter(limit=1000, order=SortOrder.ASC))


class ListingConformance:
    """Listing, counting, purging and throughput rules every store must honour, and the
    tenant scope of unique keys."""

    # -- unique keys are unique within a tenant ------------------------------------------------

    def test_a_key_taken_in_another_tenant_gives_a_new_job(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            (b,) = await store.enqueue([make_new_job(unique_key="k", tenant="b")])
            (a,) = await store.enqueue([make_new_job(unique_key="k", tenant="a", payload=[1])])
            assert a.id != b.id
            assert (a.tenant, a.unique_key, a.payload) == ("a", "k", [1])
            (none,) = await store.enqueue([make_new_job(unique_key="k")])
            (empty,) = await store.enqueue([make_new_job(unique_key="k", tenant="")])
            # no tenant is a scope of its own, apart from a tenant named ""
            assert len({a.id, b.id, none.id, empty.id}) == 4
            assert (none.tenant, empty.tenant) == (None, "")
            assert len(await _all_jobs(store)) == 4
            # each tenant gets its own job back
            (again,) = await store.enqueue([make_new_job(unique_key="k", tenant="b")])
            assert again.id == b.id

        _run(store_factory, body)

    def test_a_key_dedupes_within_its_tenant(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            (first,) = await store.enqueue([make_new_job(unique_key="k", tenant="a")])
            (dup,) = await store.enqueue([make_new_job(unique_key="k", tenant="a", payload=[2])])
            assert dup.id == first.id
            assert dup.payload == first.payload  # the stored job, not the new one
            assert [j.id for j in await _all_jobs(store)] == [first.id]

        _run(store_factory, body)

    def test_untenanted_jobs_dedupe_among_themselves(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            (first,) = await store.enqueue([make_new_job(unique_key="k")])
            (dup,) = await store.enqueue([make_new_job(unique_key="k")])
            both = await store.enqueue(
                [make_new_job(unique_key="k2"), make_new_job(unique_key="k2")]
            )
            assert dup.id == first.id
            assert both[0].id == both[1].id
            assert len(await _all_jobs(store)) == 2

        _run(store_factory, body)

    def test_one_enqueue_mixes_tenants_keys_and_duplicates(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            (held,) = await store.enqueue([make_new_job(unique_key="k", tenant="a")])
            batch = [
                make_new_job(unique_key="k", tenant="a"),  # 0: held before the call
                make_new_job(unique_key="k", tenant="b"),  # 1: new in b
                make_new_job(unique_key="k"),  # 2: new without a tenant
                make_new_job(unique_key="k", tenant="b"),  # 3: dedupes to 1
                make_new_job(unique_key="k"),  # 4: dedupes to 2
                make_new_job(unique_key="k2", tenant="a"),  # 5: new
                make_new_job(tenant="a"),  # 6: no key
            ]
            out = await store.enqueue(batch)
            assert [j.id for j in out] == [
                held.id,
                batch[1].id,
                batch[2].id,
                batch[1].id,
                batch[2].id,
                batch[5].id,
                batch[6].id,
            ]
            assert [j.tenant for j in out] == ["a", "b", None, "b", None, "a", "a"]
            stored = {j.id for j in await _all_jobs(store)}
            assert stored == {held.id, batch[1].id, batch[2].id, batch[5].id, batch[6].id}

        _run(store_factory, body)

    def test_a_chosen_id_another_tenant_has_is_refused(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            # engine.aenqueue(job_id="x") sends the id "x" under the unique key "job-id:x"
            job_id = new_id("job")

            def chosen(tenant: str | None) -> list[NewJob]:
                new = make_new_job(unique_key=f"job-id:{job_id}", tenant=tenant)
                return [attrs.evolve(new, id=job_id)]

            (b,) = await store.enqueue(chosen("b"))
            assert b.id == job_id
            (again,) = await store.enqueue(chosen("b"))
            assert again.id == job_id  # the same tenant: the key dedupes
            other = make_new_job(tenant="a")
            for tenant in ("a", None):
                with pytest.raises(JobIdTakenError) as info:
                    await store.enqueue([other, *chosen(tenant)])
                assert info.value.job_id == job_id
            # the call wrote nothing, and b's job is untouched
            jobs = await _all_jobs(store)
            assert [(j.id, j.tenant) for j in jobs] == [(job_id, "b")]

        _run(store_factory, body)

    def test_sync_producer_scopes_keys_by_tenant_if_offered(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            sync = store.sync()
            if sync is None:
                pytest.skip("this store offers no sync producer")

            def produce() -> list[Job]:
                return [
                    *sync.enqueue([make_new_job(unique_key="k", tenant="b")]),
                    *sync.enqueue([make_new_job(unique_key="k", tenant="a")]),
                    *sync.enqueue([make_new_job(unique_key="k", tenant="a")]),
                ]

            try:
                b, a, a_again = await asyncio.to_thread(produce)
            finally:
                await asyncio.to_thread(sync.close)
            assert (b.tenant, a.tenant) == ("b", "a")
            assert a.id != b.id
            assert a_again.id == a.id

        _run(store_factory, body)

    def test_an_event_wakes_only_its_tenants_timer(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            t0 = utcnow()
            later = t0 + timedelta(hours=1)
            run = await _start(store, now=t0, tenant="acme")
            key = _key(run.id, 1)
            timer = _driver(run.id, run_at=later, unique_key=key, tenant="acme")
            parked = await store.update_run(
                run.id,
                state=RunState.WAITING,
                now=t0,
                expect=frozenset({RunState.RUNNING}),
                generation=0,
                waiting_for="paid",
                wake_at=later,
                driver=timer,
            )
            assert parked is not None
            # another tenant's job under the same key: written beside the timer, never woken
            (foreign,) = await store.enqueue(
                [make_new_job(unique_key=key, tenant="evil", run_at=later)]
            )
            assert foreign.id != timer.id
            event = NewEvent(
                id=new_id("evt"),
                run_id=run.id,
                name="paid",
                payload=None,
                created_at=t0,
                tenant="acme",
            )
            spare = _driver(run.id, run_at=t0, tenant="acme")
            assert await store.send_event(event, driver=spare, now=t0) is True
            assert (await store.get_job(timer.id)).run_at <= t0 + timedelta(seconds=1)
            assert (await store.get_job(foreign.id)).run_at >= later - timedelta(seconds=1)
            ids = {j.id for j in await _all_jobs(store)}
            assert spare.id not in ids  # the timer was made due: no second driver

        _run(store_factory, body)

    # -- listing -------------------------------------------------------------------------------

    def test_job_pages_by_cursor_in_both_orders(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            mine = sorted(j.id for j in await store.enqueue([make_new_job() for _ in range(7)]))
            desc = await _walk_jobs(store, JobFilter(limit=3))
            asc = await _walk_jobs(store, JobFilter(limit=3, order=SortOrder.ASC))
            assert desc == mine[::-1]
            assert asc == mine
            # a cursor from the middle continues strictly after it
            page = await store.list_jobs(JobFilter(after=mine[2], order=SortOrder.ASC, limit=2))
            assert [j.id for j in page] == mine[3:5]
            page = await store.list_jobs(JobFilter(after=mine[2], limit=10))
            assert [j.id for j in page] == mine[:2][::-1]

        _run(store_factory, body)

    def test_job_pages_combine_cursor_and_filters(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            a = [make_new_job(tenant="a", queue="q1") for _ in range(4)]
            b = [make_new_job(tenant="b", queue="q1") for _ in range(3)]
            await store.enqueue([x for pair in zip(a, b, strict=False) for x in pair] + a[3:])
            got = await _walk_jobs(store, JobFilter(tenant="a", limit=2, order=SortOrder.ASC))
            assert got == sorted(x.id for x in a)
            got = await _walk_jobs(store, JobFilter(tenant="b", queue="q1", limit=2))
            assert got == sorted((x.id for x in b), reverse=True)
            assert await store.list_jobs(JobFilter(tenant="c")) == []

        _run(store_factory, body)

    def test_count_jobs_by_queue_and_tenant(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.enqueue(
                [make_new_job(tenant="a", queue="q1") for _ in range(3)]
                + [make_new_job(tenant="a", queue="q2")]
                + [make_new_job(tenant="b", queue="q1") for _ in range(2)]
                + [make_new_job(queue="q1")]
            )
            assert (await store.count_jobs()).get(JobState.PENDING) == 7
            assert (await store.count_jobs(tenant="a")).get(JobState.PENDING) == 4
            assert (await store.count_jobs(tenant="a", queue="q1")).get(JobState.PENDING) == 3
            assert (await store.count_jobs(tenant="b", queue="q2")).get(JobState.PENDING, 0) == 0
            assert (await store.count_jobs(queue="q1")).get(JobState.PENDING) == 6

        _run(store_factory, body)

    def test_count_runnable_by_queue_and_name(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            now = utcnow()
            await store.enqueue(
                [make_new_job("mail.send", queue="mail", tenant="a") for _ in range(3)]
                + [make_new_job("mail.send", queue="bulk", tenant="b")]
                + [make_new_job("__main__.welcome", queue="mail")]
                + [make_new_job("bill", queue="money", tenant="a")]
                # not runnable: due later, or running, or finished
                + [make_new_job("later", queue="mail", run_at=now + timedelta(hours=1))]
                + [make_new_job("ran", queue="done") for _ in range(2)]
            )
            now = utcnow()  # after the enqueue: its jobs are due
            running, finished = await _claim(store, limit=2, names=["ran"], now=now)
            assert await _finish(store, finished, now=now)
            # a retrying job is runnable again once due
            await store.enqueue([make_new_job("flaky", queue="mail", run_at=now)])
            (flaky,) = await _claim(store, limit=1, names=["flaky"], now=now)
            assert await _finish(store, flaky, OutcomeKind.RETRY, now=now, run_at=now)
            await store.pause_queue("money", paused=True)  # paused jobs still wait

            def table(rows: list[RunnableCount]) -> list[tuple[str, str, int]]:
                return [(r.queue, r.name, r.count) for r in rows]

            at = now + timedelta(seconds=1)
            assert table(await store.count_runnable(now=at)) == [
                ("bulk", "mail.send", 1),
                ("mail", "__main__.welcome", 1),
                ("mail", "flaky", 1),
                ("mail", "mail.send", 3),
                ("money", "bill", 1),
            ]
            assert table(
                await store.count_runnable(now=at, exclude_names=["mail.send", "flaky", "x"])
            ) == [("mail", "__main__.welcome", 1), ("money", "bill", 1)]
            assert table(await store.count_runnable(now=at, tenant="a")) == [
                ("mail", "mail.send", 3),
                ("money", "bill", 1),
            ]
            assert (
                table(await store.count_runnable(now=at, tenant="b", exclude_names={"mail.send"}))
                == []
            )
            later = table(await store.count_runnable(now=now + timedelta(hours=2)))
            assert ("mail", "later", 1) in later
            assert running.state is JobState.RUNNING

        _run(store_factory, body)

    def test_dlq_filters_orders_and_pages(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            a = await _dead_letter(store, 3, tenant="a", name="send", queue="mail")
            b = await _dead_letter(store, 2, tenant="b", name="bill", queue="money")
            everything = await store.list_dlq(DLQFilter())
            assert [e.job_id for e in everything] == a + b  # oldest failure first
            ids = [e.id for e in everything]
            assert ids == sorted(ids)
            newest = await store.list_dlq(DLQFilter(order=SortOrder.DESC, limit=2))
            assert [e.job_id for e in newest] == (a + b)[::-1][:2]
            assert [e.job_id for e in await store.list_dlq(DLQFilter(tenant="b"))] == b
            assert [e.job_id for e in await store.list_dlq(DLQFilter(name="send"))] == a
            assert [e.job_id for e in await store.list_dlq(DLQFilter(queue="money"))] == b
            page = await store.list_dlq(DLQFilter(after=ids[1], limit=2))
            assert [e.id for e in page] == ids[2:4]
            page = await store.list_dlq(DLQFilter(after=ids[3], order=SortOrder.DESC))
            assert [e.id for e in page] == ids[:3][::-1]
            assert await store.count_dlq() == 5
            assert await store.count_dlq(tenant="a") == 3
            assert await store.count_dlq(queue="money") == 2
            assert await store.count_dlq(queue="money", tenant="a") == 0

        _run(store_factory, body)

    def test_dlq_replayed_filter_and_counts(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            a = await _dead_letter(store, 4, tenant="a", queue="mail")
            b = await _dead_letter(store, 2, tenant="b", queue="mail")
            entries = await store.list_dlq(DLQFilter())
            by_job = {e.job_id: e for e in entries}
            for job_id in (a[0], a[2], b[1]):
                await store.replay_dlq(by_job[job_id].id, new_job_id=new_id("job"), now=utcnow())

            async def listed(filter: DLQFilter) -> list[str]:
                return [e.job_id for e in await store.list_dlq(filter)]

            unreplayed = DLQFilter(replayed=False)
            assert await listed(unreplayed) == [a[1], a[3], b[0]]
            assert await listed(DLQFilter(replayed=True)) == [a[0], a[2], b[1]]
            assert await listed(DLQFilter()) == a + b
            assert await listed(attrs.evolve(unreplayed, tenant="a", limit=1)) == [a[1]]
            newest = attrs.evolve(unreplayed, order=SortOrder.DESC, limit=2)
            assert await listed(newest) == [b[0], a[3]]
            past = attrs.evolve(unreplayed, after=by_job[a[1]].id)
            assert await listed(past) == [a[3], b[0]]
            assert await store.count_dlq(replayed=False) == 3
            assert await store.count_dlq(replayed=True) == 3
            assert await store.count_dlq(replayed=False, tenant="b") == 1
            assert await store.count_dlq(replayed=True, queue="mail", tenant="a") == 2
            assert await store.count_dlq(replayed=None) == 6
            # before: strictly before failed_at, alone or with the other filters
            cut = by_job[a[2]].failed_at
            assert await store.count_dlq(before=cut) == 2  # a[0], a[1]
            assert await store.count_dlq(before=cut, replayed=False) == 1
            assert await store.count_dlq(before=cut, tenant="b") == 0
            assert await store.count_dlq(before=utcnow() + timedelta(seconds=1)) == 6
            assert await store.count_dlq(before=utcnow() - timedelta(hours=1)) == 0

        _run(store_factory, body)

    def test_purge_dlq_by_tenant_queue_and_in_batches(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            a = await _dead_letter(store, 5, tenant="a", queue="mail")
            b = await _dead_letter(store, 2, tenant="b", queue="mail")
            c = await _dead_letter(store, 1, tenant="a", queue="other")
            later = utcnow() + timedelta(seconds=1)
            assert await store.purge_dlq(before=later, tenant="a", queue="mail", limit=2) == 2
            left = [e.job_id for e in await store.list_dlq(DLQFilter())]
            assert left == a[2:] + b + c  # the oldest went first
            assert await store.purge_dlq(before=later, tenant="a", queue="mail") == 3
            assert await store.purge_dlq(before=later, queue="mail") == 2
            assert [e.job_id for e in await store.list_dlq(DLQFilter())] == c
            assert await store.purge_dlq(before=utcnow() - timedelta(hours=1)) == 0
            assert await store.purge_dlq(before=later, tenant="b") == 0
            assert await store.purge_dlq(before=later) == 1

        _run(store_factory, body)

    def test_throughput_counts_finished_jobs_per_bucket(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            base = datetime.fromtimestamp(int(utcnow().timestamp()) // 60 * 60, UTC)
            base -= timedelta(minutes=10)
            # (minute offset, outcome, tenant, queue)
            plan = [
                (0, OutcomeKind.COMPLETED, "a", "q1"),
                (0, OutcomeKind.COMPLETED, "a", "q1"),
                (0, OutcomeKind.FAIL, "b", "q1"),
                (2, OutcomeKind.COMPLETED, "b", "q2"),
                (2, OutcomeKind.FAIL, "a", "q2"),
                (2, OutcomeKind.RETRY, "a", "q2"),  # not finished: not counted
                (-5, OutcomeKind.COMPLETED, "a", "q1"),  # before `since`
            ]
            for minute, kind, tenant, queue in plan:
                (job,) = await store.enqueue(
                    [make_new_job(tenant=tenant, queue=queue, run_at=base - timedelta(hours=1))]
                )
                at = base + timedelta(minutes=minute, seconds=30)
                (claimed,) = await _claim(store, limit=1, now=at, names={job.name})
                retry_at = at + timedelta(hours=2) if kind is OutcomeKind.RETRY else None
                assert await _finish(store, claimed, kind, now=at, error="x", run_at=retry_at)
            await store.enqueue([make_new_job()])  # pending: not counted

            def rows(buckets: list[ThroughputBucket]) -> list[tuple[datetime, int, int]]:
                return [(b.start, b.completed, b.failed) for b in buckets]

            got = await store.throughput(since=base, bucket_seconds=60)
            assert rows(got) == [(base, 2, 1), (base + timedelta(minutes=2), 1, 1)]
            assert all(b.start.tzinfo is not None for b in got)
            # five-minute buckets: the two finishing minutes may fall in one bucket or two
            got = await store.throughput(since=base, bucket_seconds=300)
            expected: dict[datetime, tuple[int, int]] = {}
            for minute, done, failed in ((0, 2, 1), (2, 1, 1)):
                at = base + timedelta(minutes=minute, seconds=30)
                start = datetime.fromtimestamp(int(at.timestamp()) // 300 * 300, UTC)
                c, f = expected.get(start, (0, 0))
                expected[start] = (c + done, f + failed)
            assert rows(got) == [(k, c, f) for k, (c, f) in sorted(expected.items())]
            assert rows(await store.throughput(since=base, bucket_seconds=60, tenant="a")) == [
                (base, 2, 0),
                (base + timedelta(minutes=2), 0, 1),
            ]
            assert rows(await store.throughput(since=base, bucket_seconds=60, queue="q2")) == [
                (base + timedelta(minutes=2), 1, 1)
            ]
            later = base + timedelta(minutes=1)
            assert rows(await store.throughput(since=later, bucket_seconds=60)) == [
                (base + timedelta(minutes=2), 1, 1)
            ]

        _run(store_factory, body)

    def test_run_pages_by_cursor_in_both_orders(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            now = utcnow()
            ids = sorted([(await _start(store, now=now, tenant="t")).id for _ in range(5)])
            await _start(store, now=now, tenant="other")
            page = await store.list_runs(RunFilter(tenant="t", limit=2))
            assert [r.id for r in page] == ids[::-1][:2]
            page = await store.list_runs(RunFilter(tenant="t", limit=2, after=page[-1].id))
            assert [r.id for r in page] == ids[::-1][2:4]
            page = await store.list_runs(RunFilter(tenant="t", order=SortOrder.ASC, after=ids[1]))
            assert [r.id for r in page] == ids[2:]

        _run(store_factory, body)
