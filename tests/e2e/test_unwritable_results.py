"""A result no store can hold fails its job alone, on every store (issue 16, finding 2).

Before the fix, a job returning a string with a lone surrogate (or, on PostgreSQL, a result
over 256 MiB) sent its whole batch of outcomes into an endless retry: the worker stopped
recording anything, the other jobs of the batch were rescued and ran again, and the bad job
ran three times. Here ten jobs finish at the same moment, so that their outcomes are written in
one batch, and the fifth returns what cannot be stored: it must end failed (dead-lettered at
once, after one run) with a clear error, and the nine others complete, each run and recorded
once.
"""

from __future__ import annotations

import asyncio
import collections
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatch_core import Engine, JobState

PG_DSN = os.environ.get(
    "DISPATCH_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("DISPATCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

N = 10  # jobs in the batch
BAD = 4  # the one whose result cannot be stored
GATE_TIMEOUT = 20.0


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis"])
def url(
    request: pytest.FixtureRequest, tmp_path: Path, require_service: Callable[[str], None]
) -> Iterator[str]:
    """A URL of an empty store of each kind."""
    yield from _store(request.param, tmp_path, require_service)


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def encoding_url(
    request: pytest.FixtureRequest, tmp_path: Path, require_service: Callable[[str], None]
) -> Iterator[str]:
    """A URL of an empty store of each kind that encodes values (the memory store keeps any
    Python value as it is, and so refuses none)."""
    yield from _store(request.param, tmp_path, require_service)


def _store(kind: str, tmp_path: Path, require_service: Callable[[str], None]) -> Iterator[str]:
    if kind == "memory":
        yield "memory://"
    elif kind == "sqlite":
        pytest.importorskip("dispatch_plugins.sqlite")
        yield f"sqlite:///{tmp_path}/results.db"
    elif kind == "postgres":
        yield from _postgres(require_service)
    else:
        yield from _redis(require_service)


def _postgres(require_service: Callable[[str], None]) -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    pytest.importorskip("dispatch_plugins.postgres")
    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except psycopg.Error as exc:
        require_service(f"PostgreSQL at {PG_DSN} ({' '.join(str(exc).split())})")
    schema = f"dispatch_results_{secrets.token_hex(4)}"
    try:
        yield f"{PG_DSN}{'&' if '?' in PG_DSN else '?'}schema={schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _redis(require_service: Callable[[str], None]) -> Iterator[str]:
    redis = pytest.importorskip("redis")
    pytest.importorskip("dispatch_plugins.redis")
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        client.ping()
    except (redis.RedisError, OSError) as exc:
        require_service(f"Redis at {REDIS_URL} ({' '.join(str(exc).split())})")
    prefix = f"dispatch-results-{secrets.token_hex(5)}"
    try:
        yield f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}prefix={prefix}"
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        client.close()


def _app(url: str, bad_result: Callable[[], Any], ran: collections.Counter[int]) -> Engine:
    """An engine whose ``N`` jobs all return at once: job ``BAD`` returns ``bad_result()``."""
    engine = Engine(url, load_entrypoints=True)
    started = 0
    gate = asyncio.Event()

    @engine.job(name="e2e.results.item", max_retries=3)
    async def item(n: int) -> Any:
        nonlocal started
        ran[n] += 1
        started += 1
        if started == N:
            gate.set()
        try:
            await asyncio.wait_for(gate.wait(), GATE_TIMEOUT)
        except TimeoutError:
            raise AssertionError(f"only {started} of {N} jobs started together") from None
        return bad_result() if n == BAD else {"n": n, "note": "déjà vu"}

    return engine


async def _check(
    engine: Engine, jobs: list[Any], ran: collections.Counter[int], error: str
) -> None:
    """Job ``BAD`` failed for good after one run, with ``error``; the others completed once."""
    assert ran == {n: 1 for n in range(N)}, f"runs per job: {dict(ran)}"
    for n, job in enumerate(jobs):
        got = await engine.aget_job(job.id)
        if n == BAD:
            assert got.state is JobState.FAILED, (got.state, got.last_error)
            assert got.attempt == 1
            assert got.result is None
            expected = f"ResultError: result of job {job.id} is not storable: {error}"
            assert (got.last_error or "").startswith(expected), got.last_error
        else:
            assert got.state is JobState.COMPLETED, (n, got.state, got.last_error)
            assert got.result == {"n": n, "note": "déjà vu"}
    dead = await engine.alist_dlq()
    assert [e.job_id for e in dead] == [jobs[BAD].id]
    assert dead[0].error.startswith("ResultError: ")


async def test_a_lone_surrogate_fails_its_job_alone(url: str) -> None:
    ran: collections.Counter[int] = collections.Counter()
    engine = _app(url, lambda: {"a": [0, 1, 2, "bad \ud800 text"]}, ran)
    try:
        jobs = await engine.jobs["e2e.results.item"].aenqueue_many(range(N))
        stats = await engine.drain(concurrency=N, timeout=30)
        assert (stats.completed, stats.failed, stats.retried) == (N - 1, 1, 0), stats
        assert (stats.lost, stats.rescued) == (0, 0), stats
        await _check(engine, jobs, ran, "lone surrogate '\\ud800' at $.a[3]")
    finally:
        await engine.aclose()


async def test_a_result_over_the_size_limit_fails_its_job_alone(url: str) -> None:
    ran: collections.Counter[int] = collections.Counter()
    engine = _app(url, lambda: {"rows": ["x" * 100] * 20}, ran)
    try:
        jobs = await engine.jobs["e2e.results.item"].aenqueue_many(range(N))
        worker = engine.worker(concurrency=N, max_result_bytes=1000)
        stats = await worker.drain(timeout=30)
        assert (stats.completed, stats.failed, stats.retried) == (N - 1, 1, 0), stats
        await _check(
            engine, jobs, ran, "it is 2.0 KiB as JSON, over max_result_bytes=1,000 (1000 bytes)"
        )
    finally:
        await engine.aclose()


async def test_a_result_of_300_mib_fails_under_the_default_limit(url: str) -> None:
    """The review's PostgreSQL case (jsonb holds at most 256 MiB), checked on every store:
    the default limit refuses it before any store sees it, without encoding it."""
    ran: collections.Counter[int] = collections.Counter()
    engine = _app(url, lambda: "x" * (300 * 1024 * 1024), ran)
    try:
        jobs = await engine.jobs["e2e.results.item"].aenqueue_many(range(N))
        stats = await engine.drain(concurrency=N, timeout=30)
        assert (stats.completed, stats.failed) == (N - 1, 1), stats
        await _check(
            engine,
            jobs,
            ran,
            "it is at least 300.0 MiB as JSON, over max_result_bytes=10,485,760 (10.0 MiB)",
        )
    finally:
        await engine.aclose()


async def test_a_result_a_real_store_refuses_fails_alone(
    encoding_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second line of defence, on real stores: with the worker's own check switched off,
    the store itself refuses the lone surrogate; the worker writes the batch in halves, the
    nine other outcomes are written and the refused one is replaced by a failure."""
    monkeypatch.setattr("dispatch_core.worker.check_result", lambda *args: None)
    ran: collections.Counter[int] = collections.Counter()
    engine = _app(encoding_url, lambda: {"a": [0, 1, 2, "bad \ud800 text"]}, ran)
    try:
        jobs = await engine.jobs["e2e.results.item"].aenqueue_many(range(N))
        stats = await engine.drain(concurrency=N, timeout=30)
        assert (stats.completed, stats.failed, stats.lost) == (N - 1, 1, 0), stats
        await _check(
            engine,
            jobs,
            ran,
            "the store refused it (UnicodeEncodeError: 'utf-8' codec can't encode character "
            "'\\ud800'",
        )
    finally:
        await engine.aclose()
