"""What a job's result and error may be, and what the worker does with one a store refuses
(issue 16, finding 2: one unwritable result wedged a worker until restart).

The worker checks a result before it queues the outcome (JSON, UTF-8, ``max_result_bytes``);
a result that fails the check fails its job, dead-lettered at once. Error texts are repaired,
never refused. And when a store still refuses a batch, the worker writes it in halves: every
outcome the store takes is written, a refused one is replaced by a failure (or dropped when
even that is refused), and the finisher never loops on it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import attrs
import pytest

from dispatch_core import (
    ConfigurationError,
    Engine,
    Job,
    JobState,
    Outcome,
    OutcomeKind,
    WorkerStats,
)
from dispatch_core.errors import ResultError, StoreUnavailableError
from dispatch_core.models import utcnow
from dispatch_core.serde import DEFAULT_MAX_RESULT_BYTES, check_result, storable_error
from dispatch_core.stores import MemoryStore

N = 8  # jobs whose outcomes are written in one batch
GATE_TIMEOUT = 10.0


# -- the check ---------------------------------------------------------------------------------


def _problem(value: Any, max_bytes: int | None = None) -> str:
    with pytest.raises(ResultError) as info:
        check_result("job_x", value, max_bytes)
    assert str(info.value).startswith("result of job job_x is not storable: ")
    return info.value.problem


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("\ud800", "lone surrogate '\\ud800' at $"),
        ({"a": [0, 1, 2, "x\udfff"]}, "lone surrogate '\\udfff' at $.a[3]"),
        ({"k\ud800": 1}, "lone surrogate '\\ud800' in a key at $"),
        ({"a b": {"c": ["\ud800"]}}, "lone surrogate '\\ud800' at $[\"a b\"].c[0]"),
        (float("nan"), "the number nan at $ (JSON has no NaN or Infinity)"),
        ({"x": [1.5, float("-inf")]}, "the number -inf at $.x[1] (JSON has no NaN or Infinity)"),
        (10**5000, "an integer of about 5,000 digits at $"),
        ({(1, 2): "v"}, "a key of type tuple at $ (JSON keys are strings)"),
    ],
    ids=["surrogate", "nested", "key", "quoted-key", "nan", "inf", "huge-int", "tuple-key"],
)
def test_a_value_no_store_holds_is_refused_with_where(value: Any, problem: str) -> None:
    assert _problem(value) == problem


def test_a_non_json_type_is_refused_with_its_type_and_path() -> None:
    assert _problem({"when": [object()]}).startswith(
        "a value of type object at $.when[0], which is not JSON"
    )


def test_a_cycle_or_a_deep_nest_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert _problem(loop) == "it is nested too deeply (or refers to itself)"
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    assert _problem(deep) == "it is nested too deeply (or refers to itself)"


def test_the_size_limit_counts_utf8_bytes_of_compact_json() -> None:
    check_result("job_x", {"a": "xx"}, 10)  # {"a":"xx"} is 10 bytes: at the limit is fine
    assert _problem({"a": "xxx"}, 10) == (
        "it is 11 bytes as JSON, over max_result_bytes=10 (10 bytes); store large data "
        "elsewhere and return a reference to it"
    )
    check_result("job_x", "é" * 4, 10)  # "éééé": 2 quotes + 4 x 2 bytes
    assert _problem("é" * 5, 10).startswith("it is 12 bytes as JSON")
    # A long string is refused on its length, without being encoded.
    assert _problem("x" * 2048, 1024).startswith("it is at least 2.0 KiB as JSON")
    check_result("job_x", "x" * 5000, None)  # None: no limit


def test_json_values_pass() -> None:
    for value in (0, -1.5, True, "déjà vu", [1, None], {"a": {"b": [1, "2"]}}, {1: "int key"}):
        check_result("job_x", value, DEFAULT_MAX_RESULT_BYTES)


def test_error_texts_are_repaired_not_refused() -> None:
    assert storable_error("plain") == "plain"
    assert storable_error("déjà vu") == "déjà vu"
    assert storable_error("bad \ud800 text") == "bad \\ud800 text"
    long = "H" * 20_000 + "T" * 20_000
    cut = storable_error(long)
    assert len(cut) < 14_100
    assert cut.startswith("H" * 10_000)
    assert cut.endswith("T" * 4_000)
    assert "[... 26,000 characters cut ...]" in cut


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10", True])
def test_max_result_bytes_must_be_a_positive_int_or_none(bad: Any) -> None:
    engine = Engine("memory://", load_entrypoints=False)
    with pytest.raises(ConfigurationError, match="max_result_bytes must be a positive"):
        engine.worker(max_result_bytes=bad)
    assert engine.worker(max_result_bytes=None).max_result_bytes is None
    assert engine.worker().max_result_bytes == DEFAULT_MAX_RESULT_BYTES == 10 * 1024 * 1024


# -- the worker: results and errors that cannot be stored --------------------------------------


@attrs.define
class Report:
    total: int


@attrs.frozen
class Row:
    name: str
    tags: list[str]


async def test_an_unserialisable_result_fails_its_job_at_once() -> None:
    engine = Engine("memory://", load_entrypoints=False)
    ran = 0

    @engine.job(name="odd", max_retries=3)
    async def odd() -> object:
        nonlocal ran
        ran += 1
        return object()

    @engine.job(name="fine")
    async def fine() -> str:
        return "ok"

    a = await odd.aenqueue()
    b = await fine.aenqueue()
    result = await engine.drain(wait_scheduled=True)
    assert (result.completed, result.failed, result.retried) == (1, 1, 0)
    assert ran == 1  # dead-lettered at once: another run would give the same result
    bad = await engine.aget_job(a.id)
    assert bad.state is JobState.FAILED
    assert bad.attempt == 1
    assert bad.result is None
    assert bad.last_error == (
        f"ResultError: result of job {a.id} is not storable: a value of type object at $, "
        "which is not JSON (use JSON types, or an attrs class or dataclass of them)"
    )
    assert [e.job_id for e in await engine.alist_dlq()] == [a.id]
    assert (await engine.aget_job(b.id)).result == "ok"


async def test_a_result_the_converter_cannot_unstructure_fails_its_job() -> None:
    engine = Engine("memory://", load_entrypoints=False)

    def refuse(value: Report) -> Any:
        raise RuntimeError("no converter for this report")

    engine.converter.register_unstructure_hook(Report, refuse)

    @engine.job(name="report")
    async def report() -> Report:
        return Report(total=1)

    job = await report.aenqueue()
    assert (await engine.drain()).failed == 1
    assert (await engine.aget_job(job.id)).last_error == (
        f"ResultError: result of job {job.id} is not storable: cannot unstructure Report: "
        "no converter for this report"
    )


async def test_an_attrs_result_is_checked_as_the_json_it_becomes() -> None:
    engine = Engine("memory://", load_entrypoints=False)

    @engine.job(name="rows")
    async def rows(bad: bool) -> Row:
        return Row(name="r", tags=["ok", "\ud800" if bad else "fine"])

    good, bad = await rows.aenqueue_many([False, True])
    assert (await engine.drain()).failed == 1
    assert (await engine.aget_job(good.id)).result == {"name": "r", "tags": ["ok", "fine"]}
    assert "lone surrogate '\\ud800' at $.tags[1]" in (
        (await engine.aget_job(bad.id)).last_error or ""
    )


async def test_max_result_bytes_applies_per_worker() -> None:
    engine = Engine("memory://", load_entrypoints=False)

    @engine.job(name="blob")
    async def blob(size: int) -> str:
        return "x" * size

    small, big = await blob.aenqueue_many([98, 99])  # 100 and 101 bytes of JSON
    stats = await engine.worker(max_result_bytes=100).drain()
    assert (stats.completed, stats.failed) == (1, 1)
    assert (await engine.aget_job(small.id)).state is JobState.COMPLETED
    assert "it is 101 bytes as JSON, over max_result_bytes=100" in (
        (await engine.aget_job(big.id)).last_error or ""
    )


async def test_an_error_with_a_lone_surrogate_is_recorded_escaped() -> None:
    engine = Engine("memory://", load_entrypoints=False)

    @engine.job(name="shout", max_retries=0)
    async def shout() -> None:
        raise ValueError("bad byte \ud800 here")

    job = await shout.aenqueue()
    assert (await engine.drain()).failed == 1
    error = (await engine.aget_job(job.id)).last_error or ""
    assert error.startswith("ValueError: bad byte \\ud800 here")
    error.encode("utf-8")  # storable everywhere


async def test_a_huge_error_message_is_cut() -> None:
    engine = Engine("memory://", load_entrypoints=False)

    @engine.job(name="verbose", max_retries=0)
    async def verbose() -> None:
        raise ValueError("m" * 5_000_000)

    job = await verbose.aenqueue()
    assert (await engine.drain()).failed == 1
    error = (await engine.aget_job(job.id)).last_error or ""
    assert error.startswith("ValueError: mmm")
    assert len(error) < 14_100
    assert "characters cut" in error


async def test_an_exception_whose_str_raises_is_still_recorded() -> None:
    class Sulky(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    engine = Engine("memory://", load_entrypoints=False)

    @engine.job(name="sulk", max_retries=0)
    async def sulk() -> None:
        raise Sulky()

    job = await sulk.aenqueue()
    assert (await engine.drain(timeout=10)).failed == 1
    assert (await engine.aget_job(job.id)).last_error == ("Sulky: (its message could not be read)")


# -- the worker: a store that refuses one outcome of a batch -----------------------------------


class RefusingStore(MemoryStore):
    """A memory store whose ``finish`` refuses any batch holding an outcome ``refuses(o)``
    picks, like PostgreSQL refusing one row of a multi-row statement; it counts the calls."""

    def __init__(
        self,
        refuses: Callable[[Outcome], bool],
        error: Callable[[], Exception] = lambda: ValueError("value refused by the store"),
        heartbeat_error: Callable[[], Exception] | None = None,
    ) -> None:
        super().__init__()
        self.refuses = refuses
        self.error = error
        self.heartbeat_error = heartbeat_error
        self.finish_calls = 0
        self.refused_calls = 0

    async def finish(self, outcomes: Sequence[Outcome], *, now: datetime) -> list[bool]:
        self.finish_calls += 1
        if any(self.refuses(o) for o in outcomes):
            self.refused_calls += 1
            raise self.error()
        return await super().finish(outcomes, now=now)

    async def heartbeat(self, **kw: Any) -> set[str]:
        if self.heartbeat_error is not None:
            raise self.heartbeat_error()
        return await super().heartbeat(**kw)


def _batched_app(store: MemoryStore, ran: collections.Counter[int]) -> Engine:
    """``N`` jobs that all return at once, so their outcomes go to the store in one batch."""
    engine = Engine(store, load_entrypoints=False)
    started = 0
    gate = asyncio.Event()

    @engine.job(name="item", max_retries=3)
    async def item(n: int) -> dict[str, int]:
        nonlocal started
        ran[n] += 1
        started += 1
        if started == N:
            gate.set()
        try:
            await asyncio.wait_for(gate.wait(), GATE_TIMEOUT)
        except TimeoutError:
            raise AssertionError(f"only {started} of {N} jobs started together") from None
        return {"n": n}

    return engine


async def _run_batch(store: RefusingStore, bad: int) -> tuple[Engine, list[Job], WorkerStats]:
    ran: collections.Counter[int] = collections.Counter()
    engine = _batched_app(store, ran)
    jobs = await engine.jobs["item"].aenqueue_many(range(N))
    bad_id = jobs[bad].id
    kind_refused = store.refuses

    def refuses(o: Outcome) -> bool:  # only the bad job's outcomes
        return o.job_id == bad_id and kind_refused(o)

    store.refuses = refuses
    worker = engine.worker(concurrency=N)
    stats = await worker.drain(timeout=20)
    assert ran == {n: 1 for n in range(N)}, f"runs per job: {dict(ran)}"
    assert worker.outcomes.pending == []
    assert worker.outcomes.strikes == {}
    for n, job in enumerate(jobs):
        if n != bad:
            got = await engine.aget_job(job.id)
            assert (got.state, got.result) == (JobState.COMPLETED, {"n": n}), n
    return engine, jobs, stats


async def test_a_refused_result_is_replaced_by_a_failure_and_the_others_are_written() -> None:
    store = RefusingStore(lambda o: o.kind is OutcomeKind.COMPLETED)
    engine, jobs, stats = await _run_batch(store, bad=3)
    assert (stats.completed, stats.failed, stats.lost) == (N - 1, 1, 0)
    got = await engine.aget_job(jobs[3].id)
    assert got.state is JobState.FAILED
    assert got.result is None
    assert got.last_error == (
        f"ResultError: result of job {jobs[3].id} is not storable: the store refused it "
        "(ValueError: value refused by the store)"
    )
    assert [e.job_id for e in await engine.alist_dlq()] == [jobs[3].id]
    # The whole batch, then halves down to the bad outcome, twice (it is given a second
    # chance alone), then its replacement: a handful of calls, not a loop.
    assert store.finish_calls <= 12, store.finish_calls


async def test_an_outcome_refused_even_as_a_failure_is_dropped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RefusingStore(lambda o: True)  # every outcome of the bad job, its replacement too
    with caplog.at_level(logging.ERROR, logger="dispatch_core.worker"):
        engine, jobs, stats = await _run_batch(store, bad=0)
    assert (stats.completed, stats.failed) == (N - 1, 0)
    bad = await engine.aget_job(jobs[0].id)
    # Dropped: still running under its lease, which expires; then the leader rescues it.
    assert bad.state is JobState.RUNNING
    dropped = [r.getMessage() for r in caplog.records if "dropping it" in r.getMessage()]
    assert len(dropped) == 1, dropped
    assert jobs[0].id in dropped[0], dropped
    assert store.finish_calls <= 12, store.finish_calls


async def test_an_outcome_unavailable_alone_while_the_store_answers_is_replaced() -> None:
    """PostgreSQL reports a value over its limits (and a statement timeout) like a lost
    connection; when the store answers every other call, the outcome is refused all the same,
    after a third failure alone."""
    store = RefusingStore(
        lambda o: o.kind is OutcomeKind.COMPLETED,
        error=lambda: StoreUnavailableError("string too long to represent as jsonb string"),
    )
    engine, jobs, stats = await _run_batch(store, bad=N - 1)
    assert (stats.completed, stats.failed) == (N - 1, 1)
    assert "the store refused it (StoreUnavailableError: string too long" in (
        (await engine.aget_job(jobs[N - 1].id)).last_error or ""
    )
    assert store.finish_calls <= 12, store.finish_calls


async def test_outcomes_are_kept_while_the_store_is_down() -> None:
    """A real outage (no call answers) keeps every outcome, whole, for when the store is back:
    nothing is replaced or dropped."""
    store = RefusingStore(
        lambda o: True,
        error=lambda: StoreUnavailableError("connection refused"),
        heartbeat_error=lambda: StoreUnavailableError("connection refused"),
    )
    ran: collections.Counter[int] = collections.Counter()
    engine = _batched_app(store, ran)
    jobs = await engine.jobs["item"].aenqueue_many(range(N))
    worker = engine.worker(concurrency=N)
    drain = asyncio.create_task(worker.drain(timeout=20))
    for _ in range(200):  # the batch failed a few times, with backoff
        if store.refused_calls >= 4:
            break
        await asyncio.sleep(0.05)
    assert store.refused_calls >= 4, "the worker did not try to write its outcomes"
    assert len(worker.outcomes.pending) + len(worker.outcomes.writing) == N  # kept, whole
    store.refuses = lambda o: False  # the store is back
    store.heartbeat_error = None
    stats = await drain
    assert (stats.completed, stats.failed) == (N, 0)
    assert ran == {n: 1 for n in range(N)}
    for n, job in enumerate(jobs):
        assert (await engine.aget_job(job.id)).result == {"n": n}


async def test_a_finished_job_keeps_its_lease_while_its_outcome_is_written() -> None:
    """Heartbeats extend the leases of jobs whose outcome waits to be written: a write slower
    than the lease does not get the job rescued (and run again)."""

    class SlowFinish(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.writing = asyncio.Event()

        async def finish(self, outcomes: Sequence[Outcome], *, now: datetime) -> list[bool]:
            if not self.writing.is_set():
                self.writing.set()
                await asyncio.sleep(2.5)  # the first write outlasts the lease (1 s)
            return await super().finish(outcomes, now=now)

    store = SlowFinish()
    engine = Engine(store, load_entrypoints=False)
    ran = 0

    @engine.job(name="quick")
    async def quick() -> str:
        nonlocal ran
        ran += 1
        return "done"

    job = await quick.aenqueue()
    worker = engine.worker(lease_seconds=1.0, heartbeat_interval=0.2, lead=False)
    run = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(store.writing.wait(), 10)
        await asyncio.sleep(1.5)  # past the lease the claim gave
        # What the leader does: had the lease not been renewed, the job would be rescued.
        assert await store.rescue_expired(now=utcnow()) == []
        for _ in range(100):
            if (await engine.aget_job(job.id)).state is JobState.COMPLETED:
                break
            await asyncio.sleep(0.05)
        got = await engine.aget_job(job.id)
        assert (got.state, got.result) == (JobState.COMPLETED, "done"), got
    finally:
        worker.stop()
        stats = await asyncio.wait_for(run, 10)
    assert ran == 1
    assert (stats.completed, stats.lost) == (1, 0), stats
