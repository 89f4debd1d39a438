"""Conformance rules of previews: a listing asked for them (``JobFilter(preview=N)``,
``DLQFilter``, ``RunFilter``) returns each body longer than N bytes of UTF-8 as a
:class:`~dispatch_core.models.Truncated`, cut where the store keeps it, and every detail read
returns the whole body."""

from __future__ import annotations

from typing import Any

from dispatch_core.models import (
    DLQFilter,
    JobFilter,
    Outcome,
    OutcomeKind,
    SortOrder,
    Truncated,
    utcnow,
)
from dispatch_core.store import Store
from dispatch_core.testing._helpers import StoreFactory, _claim, _run, make_new_job
from dispatch_core.testing._workflow_helpers import _start
from dispatch_core.workflows.models import RunFilter, RunState

__all__ = ["PreviewConformance"]

#: The preview length the rules use, in bytes.
N = 100

#: Bodies and what a listing with ``preview=N`` returns for each. Strings, so that every
#: store's JSON text is the same (PostgreSQL renders objects and arrays its own way); the
#: non-ASCII ones tell bytes from characters, and where a cut splits a character.
CASES: list[tuple[Any, Any]] = [
    ("small", "small"),
    ("a" * (N - 2), "a" * (N - 2)),  # exactly N bytes with its quotes: whole
    ("a" * (N - 1), Truncated(preview='"' + "a" * (N - 1), size=N + 1)),
    ("a" * 5000, Truncated(preview='"' + "a" * (N - 1), size=5002)),
    ("é" * 49, "é" * 49),  # 100 bytes: whole
    # 60 characters, 122 bytes: a byte count, not a character count, decides
    ("é" * 60, Truncated(preview='"' + "é" * 49, size=122)),
    # 2-byte characters from an odd offset: the 50th would end at byte 101
    ("é" * 3000, Truncated(preview='"' + "é" * 49, size=6002)),
    # 4-byte characters: the 25th would end at byte 101
    ("\U0001f600" * 1000, Truncated(preview='"' + "\U0001f600" * 24, size=4002)),
    # 3-byte characters after one ASCII one: the cut falls inside the 33rd
    ("x" + "€" * 40, Truncated(preview='"x' + "€" * 32, size=123)),
]


async def _complete(store: Store, result: Any, payload: Any = "p") -> str:
    """A job that completed with ``result``; its id."""
    (job,) = await store.enqueue([make_new_job(payload=payload)])
    (claimed,) = await _claim(store, limit=1, names={job.name})
    assert claimed.attempt_token is not None
    outcome = Outcome(
        job_id=job.id,
        attempt_token=claimed.attempt_token,
        kind=OutcomeKind.COMPLETED,
        result=result,
    )
    assert await store.finish([outcome], now=utcnow()) == [True]
    return job.id


class PreviewConformance:
    """Listings with ``preview`` cut long bodies; detail reads never do."""

    def test_job_listing_previews_long_payloads(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            jobs = await store.enqueue([make_new_job(payload=p) for p, _ in CASES])
            listed = await store.list_jobs(JobFilter(preview=N, order=SortOrder.ASC))
            assert [j.id for j in listed] == [j.id for j in jobs]
            assert [j.payload for j in listed] == [want for _, want in CASES]
            # everything else is as stored
            assert [j.name for j in listed] == [j.name for j in jobs]
            assert all(j.result is None for j in listed)
            # without a preview, and in the detail read, every body is whole
            whole = await store.list_jobs(JobFilter(order=SortOrder.ASC))
            assert [j.payload for j in whole] == [p for p, _ in CASES]
            for job, (payload, _) in zip(jobs, CASES, strict=True):
                assert (await store.get_job(job.id)).payload == payload

        _run(store_factory, body)

    def test_job_listing_previews_long_results(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            big = {"rows": ["r" * 40] * 10}  # an object: its text is the store's own
            short = await _complete(store, "x" * 20, payload="y" * 500)
            long = await _complete(store, "z" * 300)
            nothing = await _complete(store, None)
            structured = await _complete(store, big)
            listed = {j.id: j for j in await store.list_jobs(JobFilter(preview=N))}
            assert listed[short].result == "x" * 20
            assert listed[short].payload == Truncated(preview='"' + "y" * (N - 1), size=502)
            assert listed[long].result == Truncated(preview='"' + "z" * (N - 1), size=302)
            assert listed[long].payload == "p"
            assert listed[nothing].result is None  # no result is no text: never cut
            cut = listed[structured].result
            assert isinstance(cut, Truncated)
            assert cut.size > N
            assert cut.preview.startswith('{"rows":')
            assert len(cut.preview.encode()) <= N
            assert (await store.get_job(long)).result == "z" * 300
            assert (await store.get_job(structured)).result == big

        _run(store_factory, body)

    def test_preview_zero_leaves_every_body_out(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.enqueue([make_new_job(payload=[1])])
            (listed,) = await store.list_jobs(JobFilter(preview=0))
            assert listed.payload == Truncated(preview="", size=3)
            assert listed.result is None

        _run(store_factory, body)

    def test_previews_follow_the_listing_filters_and_pages(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            a = await store.enqueue([make_new_job(payload="a" * 500, tenant="a") for _ in range(3)])
            await store.enqueue([make_new_job(payload="b" * 500, tenant="b") for _ in range(2)])
            first = await store.list_jobs(JobFilter(tenant="a", preview=N, limit=2))
            after = await store.list_jobs(
                JobFilter(tenant="a", preview=N, limit=2, after=first[-1].id)
            )
            assert [j.id for j in first + after] == sorted((j.id for j in a), reverse=True)
            cut = Truncated(preview='"' + "a" * (N - 1), size=502)
            assert all(j.payload == cut for j in first + after)

        _run(store_factory, body)

    def test_dlq_listing_previews_long_payloads(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            jobs = await store.enqueue(
                [make_new_job(payload=p, max_attempts=1) for p in ("s", "d" * 1000)]
            )
            for claimed in await _claim(store, limit=2):
                assert claimed.attempt_token is not None
                fail = Outcome(
                    job_id=claimed.id,
                    attempt_token=claimed.attempt_token,
                    kind=OutcomeKind.FAIL,
                    error="boom",
                )
                assert await store.finish([fail], now=utcnow()) == [True]
            listed = {e.job_id: e for e in await store.list_dlq(DLQFilter(preview=N))}
            small, large = (listed[j.id] for j in jobs)
            assert small.payload == "s"
            assert large.payload == Truncated(preview='"' + "d" * (N - 1), size=1002)
            assert large.error == "boom"
            assert (await store.get_dlq(large.id)).payload == "d" * 1000
            (whole,) = await store.list_dlq(DLQFilter(after=small.id))
            assert whole.payload == "d" * 1000

        _run(store_factory, body)

    def test_run_listing_previews_long_inputs_and_outputs(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            now = utcnow()
            small = await _start(store, now=now, input="i")
            large = await _start(store, now=now, input="i" * 700)
            done = await store.update_run(
                small.id, state=RunState.COMPLETED, now=now, output="o" * 400
            )
            assert done is not None
            listed = {r.id: r for r in await store.list_runs(RunFilter(preview=N))}
            assert listed[small.id].input == "i"
            assert listed[small.id].output == Truncated(preview='"' + "o" * (N - 1), size=402)
            assert listed[large.id].input == Truncated(preview='"' + "i" * (N - 1), size=702)
            assert listed[large.id].output is None
            assert (await store.get_run(large.id)).input == "i" * 700
            assert (await store.get_run(small.id)).output == "o" * 400
            whole = {r.id: r for r in await store.list_runs(RunFilter())}
            assert whole[large.id].input == "i" * 700

        _run(store_factory, body)
