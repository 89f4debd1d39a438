"""Conformance rules of the operator's reads: keyset pages, tenant filters, counts, purges in
batches and throughput buckets (what the admin API and the dashboard are built on)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs

from dispatch_core.models import (
    DLQFilter,
    JobFilter,
    OutcomeKind,
    SortOrder,
    ThroughputBucket,
    utcnow,
)
from dispatch_core.states import JobState
from dispatch_core.store import Store
from dispatch_core.testing._helpers import StoreFactory, _claim, _finish, _run, make_new_job
from dispatch_core.testing.conformance_workflows import _start
from dispatch_core.workflows.models import RunFilter

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


class ListingConformance:
    """Listing, counting, purging and throughput rules every store must honour."""

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
