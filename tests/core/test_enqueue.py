"""Enqueue: typed payloads validated up front, options applied, nothing written on error."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import attrs
import pytest

from dispatch_core import (
    ConfigurationError,
    Engine,
    JobContext,
    JobState,
    PayloadError,
    SyncInAsyncContextError,
    UnknownJobError,
)


@attrs.frozen
class Welcome:
    user_id: int
    email: str


@dataclasses.dataclass
class Invoice:
    number: str
    lines: list[float]


@pytest.fixture
def engine() -> Engine:
    e = Engine("memory://", load_entrypoints=False)

    @e.job(name="welcome", queue="emails", max_retries=5, timeout=30, priority=3)
    async def welcome(ctx: JobContext, msg: Welcome) -> None: ...

    @e.job(name="invoice")
    def invoice(inv: Invoice) -> None: ...

    @e.job(name="anything")
    async def anything(value) -> None: ...  # type: ignore[no-untyped-def]

    @e.job(name="tick")
    async def tick() -> None: ...

    return e


async def count(engine: Engine) -> int:
    return sum((await engine.acount_jobs()).values())


async def test_attrs_payload_round_trips(engine: Engine) -> None:
    job = await engine.jobs["welcome"].aenqueue(Welcome(1, "a@example.com"))
    assert job.payload == {"user_id": 1, "email": "a@example.com"}
    assert job.state is JobState.PENDING


async def test_definition_options_are_real_defaults(engine: Engine) -> None:
    job = await engine.jobs["welcome"].aenqueue(Welcome(1, "a@example.com"))
    assert (job.queue, job.max_attempts, job.timeout, job.priority) == ("emails", 6, 30, 3)


async def test_enqueue_options_override(engine: Engine) -> None:
    before = datetime.now(UTC)
    job = await engine.jobs["welcome"].aenqueue(
        Welcome(1, "a@x"),
        queue="bulk",
        priority=-1,
        delay=60,
        max_retries=0,
        timeout=5,
        unique_key="w-1",
        tenant="acme",
        headers={"k": "v"},
    )
    assert (job.queue, job.priority, job.max_attempts, job.timeout) == ("bulk", -1, 1, 5)
    assert job.run_at >= before + timedelta(seconds=59)
    assert (job.unique_key, job.tenant, job.headers) == ("w-1", "acme", {"k": "v"})
    at = datetime(2030, 1, 1, tzinfo=UTC)
    later = await engine.jobs["welcome"].aenqueue(Welcome(2, "b@x"), run_at=at)
    assert later.run_at == at


async def test_dict_payload_is_validated_against_the_type(engine: Engine) -> None:
    job = await engine.aenqueue("welcome", {"user_id": 7, "email": "x@y"})
    assert job.payload == {"user_id": 7, "email": "x@y"}


async def test_missing_field_is_refused_with_its_path(engine: Engine) -> None:
    with pytest.raises(PayloadError, match=r"required field missing @ \$\.email"):
        await engine.aenqueue("welcome", {"user_id": 7})
    assert await count(engine) == 0


async def test_wrong_type_is_refused_not_coerced(engine: Engine) -> None:
    with pytest.raises(PayloadError, match=r"\$\.user_id"):
        await engine.aenqueue("welcome", {"user_id": "7", "email": "x@y"})
    with pytest.raises(PayloadError, match=r"\$\.lines\[1\]"):
        await engine.aenqueue("invoice", {"number": "A1", "lines": [1.0, "two"]})
    assert await count(engine) == 0


async def test_bulk_with_one_bad_payload_writes_nothing(engine: Engine) -> None:
    good = Welcome(1, "a@x")
    with pytest.raises(PayloadError):
        await engine.jobs["welcome"].aenqueue_many([good, {"user_id": 2}, good])
    assert await count(engine) == 0


async def test_untyped_payload_accepts_json(engine: Engine) -> None:
    job = await engine.aenqueue("anything", {"a": [1, "b", None]})
    assert job.payload == {"a": [1, "b", None]}


async def test_payloadless_job(engine: Engine) -> None:
    job = await engine.jobs["tick"].aenqueue()
    assert job.payload is None
    with pytest.raises(PayloadError, match="takes no payload"):
        await engine.jobs["tick"].aenqueue({"x": 1})
    with pytest.raises(PayloadError, match="required payload missing"):
        await engine.jobs["welcome"].aenqueue()


async def test_unknown_job_name_is_refused(engine: Engine) -> None:
    with pytest.raises(
        UnknownJobError, match=r"unknown job 'nope'; registered jobs: anything, invoice"
    ):
        await engine.aenqueue("nope", {})
    assert await count(engine) == 0


async def test_definition_from_another_engine_is_refused(engine: Engine) -> None:
    other = Engine("memory://", load_entrypoints=False)

    @other.job(name="foreign")
    async def foreign() -> None: ...

    with pytest.raises(UnknownJobError):
        await engine.aenqueue(foreign)


async def test_unique_key_returns_the_existing_job(engine: Engine) -> None:
    first = await engine.jobs["welcome"].aenqueue(Welcome(1, "a@x"), unique_key="welcome-1")
    again = await engine.jobs["welcome"].aenqueue(Welcome(1, "a@x"), unique_key="welcome-1")
    assert again.id == first.id
    assert await count(engine) == 1


async def test_bad_options_are_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await engine.jobs["tick"].aenqueue(run_at=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="run_at or delay"):
        await engine.jobs["tick"].aenqueue(run_at=datetime.now(UTC), delay=1)
    with pytest.raises(ValueError, match="max_retries must be >= 0"):
        await engine.jobs["tick"].aenqueue(max_retries=-1)


def test_sync_enqueue_from_plain_code(engine: Engine) -> None:
    job = engine.jobs["welcome"].enqueue(Welcome(1, "a@x"))
    assert engine.get_job(job.id).state is JobState.PENDING
    jobs = engine.jobs["invoice"].enqueue_many([Invoice("A", [1.0]), Invoice("B", [])])
    assert len(jobs) == 2
    assert engine.cancel(job.id).state is JobState.CANCELLED


async def test_sync_call_inside_a_loop_names_the_async_twin(engine: Engine) -> None:
    with pytest.raises(SyncInAsyncContextError, match=r"await aenqueue\(\.\.\.\)"):
        engine.jobs["tick"].enqueue()
    with pytest.raises(SyncInAsyncContextError, match="aget_job"):
        engine.get_job("job_x")


def test_handler_with_two_payloads_is_refused() -> None:
    e = Engine("memory://", load_entrypoints=False)
    with pytest.raises(ConfigurationError, match="several payload parameters"):

        @e.job
        async def bad(a: int, b: int) -> None: ...


def test_duplicate_name_is_refused() -> None:
    e = Engine("memory://", load_entrypoints=False)

    @e.job(name="x")
    async def one() -> None: ...

    with pytest.raises(ConfigurationError, match="already registered"):

        @e.job(name="x")
        async def two() -> None: ...


def test_default_name_is_module_and_qualname() -> None:
    e = Engine("memory://", load_entrypoints=False)

    @e.job
    async def hello() -> None: ...

    assert hello.name == f"{__name__}.test_default_name_is_module_and_qualname.<locals>.hello"


async def test_untyped_payload_must_be_json(engine: Engine) -> None:
    with pytest.raises(
        PayloadError, match=r"a value of type object at \$\.when, which is not JSON"
    ):
        await engine.aenqueue("anything", {"when": object()})
    assert await count(engine) == 0


async def test_transactional_enqueue_on_a_store_without_it_is_refused(engine: Engine) -> None:
    with pytest.raises(ConfigurationError, match=r"caller's transaction \(conn=\.\.\.\)"):
        await engine.jobs["tick"].aenqueue(conn=object())
    assert await count(engine) == 0


def test_sync_transactional_enqueue_on_a_store_without_it_is_refused(engine: Engine) -> None:
    with pytest.raises(ConfigurationError, match=r"caller's transaction \(conn=\.\.\.\)"):
        engine.jobs["tick"].enqueue(conn=object())


async def test_a_chosen_job_id_is_used_and_idempotent() -> None:
    engine = Engine("memory://", load_entrypoints=False)

    @engine.job(name="ping")
    async def ping(n: int) -> int:
        return n

    first = await ping.aenqueue(1, job_id="4ad9d1c3-0b53-4bd6-9a74-0f4b8e1d7a3b")
    assert first.id == "4ad9d1c3-0b53-4bd6-9a74-0f4b8e1d7a3b"
    again = await ping.aenqueue(2, job_id=first.id)
    assert again.id == first.id
    assert again.payload == 1  # the existing job, not a second one
    await engine.drain()
    assert (await engine.aget_job(first.id)).result == 1
    with pytest.raises(ValueError, match="job_id must be 1 to 200 printable"):
        await ping.aenqueue(3, job_id="has space")
    with pytest.raises(ValueError, match="job_id or unique_key, not both"):
        await ping.aenqueue(3, job_id="x1", unique_key="k")
    with pytest.raises(ValueError, match="cannot be given to enqueue_many"):
        await ping.aenqueue_many([1, 2], job_id="x2")
    assert len(await engine.alist_jobs()) == 1
