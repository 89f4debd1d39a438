"""Store calls read the payloads of the jobs they return, and no other (issue 16, finding 6).

Twenty delayed 10 MB jobs once made every idle claim read 750 MB under the write lock (361 ms
instead of 0.01 ms) and an enqueue wait 215 ms at the median: the claim read each candidate's
row for columns stored behind its payload, and the WITHOUT ROWID jobs table compared whole
rows, payloads included, on every insert and every lookup by id.

The bytes a call reads are counted by the kernel (``rchar`` in ``/proc/self/io``: every
``read``/``pread`` of the process), on a connection opened for the measurement (an empty page
cache) with memory-mapped I/O off, so they do not depend on timing. The plan tests pin the same
property on any platform: every access to ``jobs`` in those statements is index-only or by
rowid.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dispatch_core.models import Job, JobFilter, Outcome, OutcomeKind, utcnow
from dispatch_core.queues import QueueConfig
from dispatch_core.states import JobState
from dispatch_core.store import PruneCutoffs
from dispatch_core.testing import make_new_job
from dispatch_plugins.sqlite import ops
from dispatch_plugins.sqlite.connection import connect
from dispatch_plugins.sqlite.migrations import migrate
from dispatch_plugins.sqlite.ops.claim import (
    _NEXT_RUN_AT,
    _QUEUE_JOBS,
    _RESCUE_CHECK_WORKERS,
    _claim_sql,
    _filters,
)
from dispatch_plugins.sqlite.ops.cluster import _PRUNE_JOBS
from dispatch_plugins.sqlite.ops.common import where_equal
from dispatch_plugins.sqlite.ops.jobs import _COUNT_JOBS, _COUNT_RUNNABLE, _THROUGHPUT

_PROC_IO = Path("/proc/self/io")
needs_proc_io = pytest.mark.skipif(
    not _PROC_IO.exists(), reason="counts the bytes read through /proc/self/io (Linux only)"
)

#: One large payload; eight of them wait in the store, far more than SQLite's page cache.
_BIG = 2 * 1024 * 1024
#: What a call may read: index pages and the rows it returns, never one large payload.
_BOUND = 256 * 1024


def _bytes_read() -> int:
    for line in _PROC_IO.read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar line in /proc/self/io")


def _big(tag: str) -> dict[str, str]:
    return {"blob": tag * _BIG}


def _open(path: Path) -> sqlite3.Connection:
    conn = connect(str(path), busy_timeout_ms=5000)
    conn.execute("PRAGMA mmap_size = 0")  # every page read goes through read(): counted
    return conn


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database of large jobs, none due: six delayed (in plain, capped and per-tenant
    rate-limited queues), one completed with a large result, one running."""
    path = tmp_path / "jobs.db"
    conn = _open(path)
    try:
        migrate(conn, str(path))
        later = utcnow() + timedelta(hours=1)
        ops.set_queue(conn, QueueConfig(name="capped", concurrency=1))
        ops.set_queue(conn, QueueConfig(name="shared", rate=5.0, per_tenant=True))
        delayed = [
            make_new_job("big", queue=q, payload=_big(str(i)), priority=p, run_at=later, tenant=t)
            for i, (q, p, t) in enumerate(
                [
                    ("q", 0, "acme"),
                    ("q", 5, "acme"),
                    ("q", 0, None),
                    ("other", 9, "zed"),
                    ("capped", 0, None),
                    ("shared", 0, "acme"),
                ]
            )
        ]
        ops.enqueue(conn, delayed)
        # One finished with a large result, one running: the stats' other branches.
        ops.enqueue(conn, [make_new_job("big", queue="q", payload=_big("d"), tenant="acme")])
        done = _claim(conn, limit=1)
        ops.finish(conn, [_outcome(done[0], result=_big("r"))], now=utcnow())
        ops.enqueue(conn, [make_new_job("big", queue="q", payload=_big("h"), tenant="acme")])
        (held,) = _claim(conn, limit=1)
        assert held.state is JobState.RUNNING
    finally:
        conn.close()
    return path


def _claim(conn: sqlite3.Connection, limit: int = 10, **kw: Any) -> list[Job]:
    args: dict[str, Any] = {"queues": None, "names": None}
    args.update(kw)
    return ops.claim(conn, worker_id="wkr_t", limit=limit, lease_seconds=30.0, now=utcnow(), **args)


def _outcome(job: Job, **kw: Any) -> Outcome:
    assert job.attempt_token is not None
    return Outcome(job_id=job.id, attempt_token=job.attempt_token, kind=OutcomeKind.COMPLETED, **kw)


def _reads(call: Callable[..., object], *args: object) -> tuple[int, Any]:
    """The bytes ``call(*args)`` read, and what it returned."""
    before = _bytes_read()
    result = call(*args)
    return _bytes_read() - before, result


@needs_proc_io
def test_idle_claims_and_the_stats_read_no_payload(db: Path) -> None:
    now = utcnow()
    past = now - timedelta(days=1)
    calls: dict[str, Callable[[sqlite3.Connection], object]] = {
        "claim": lambda c: _claim(c),
        "claim of a queue and names": lambda c: _claim(c, queues=["q"], names=["big"]),
        # A limited queue in reach: the claim counts, charges and claims in one transaction.
        "claim with a concurrency cap": lambda c: _claim(c, queues=["capped", "q"]),
        "claim with per-tenant rates": lambda c: _claim(c, queues=["shared"], names=["big"]),
        "next_run_at": lambda c: ops.next_run_at(c, queues=None, names=None),
        "next_run_at of a queue": lambda c: ops.next_run_at(c, queues=["q"], names=["big"]),
        "count_runnable": lambda c: ops.count_runnable(c, now=now + timedelta(hours=2)),
        "count_runnable of a tenant": lambda c: ops.count_runnable(c, now=now, tenant="acme"),
        "list_queues": lambda c: ops.list_queues(c, now=now),
        "count_jobs": lambda c: ops.count_jobs(c),
        "count_jobs of a tenant": lambda c: ops.count_jobs(c, tenant="acme"),
        "count_jobs of a queue": lambda c: ops.count_jobs(c, queue="q", tenant="acme"),
        "throughput of a tenant": lambda c: ops.throughput(
            c, since=past, bucket_seconds=60, tenant="acme"
        ),
        "rescue_expired": lambda c: ops.rescue_expired(c, now=now, worker_timeout=30.0),
        "prune": lambda c: ops.prune(c, PruneCutoffs(completed=past, failed=past)),
    }
    for name, call in calls.items():
        conn = _open(db)
        try:
            conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()  # the schema, read
            read, result = _reads(call, conn)
        finally:
            conn.close()
        if name.startswith(("claim", "rescue")):
            assert result == [], (name, result)  # nothing is due, nothing expired
        assert read < _BOUND, f"{name} read {read:,} bytes; one payload is {_BIG:,}"


@needs_proc_io
def test_calls_about_one_job_read_no_other_jobs_payload(db: Path) -> None:
    conn = _open(db)
    try:
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        small = make_new_job("small", queue="q", payload={"n": 1})
        steps: list[tuple[str, Callable[[], object]]] = [
            ("enqueue", lambda: ops.enqueue(conn, [small])),
            ("get_job", lambda: ops.get_job(conn, small.id)),
            ("claim", lambda: _claim(conn)),
        ]
        results: dict[str, Any] = {}
        for name, call in steps:
            read, results[name] = _reads(call)
            assert read < _BOUND, f"{name} read {read:,} bytes; one payload is {_BIG:,}"
        (claimed,) = results["claim"]
        assert claimed.id == small.id
        token = claimed.attempt_token
        assert token is not None
        later = utcnow()
        failure = Outcome(job_id=small.id, attempt_token=token, kind=OutcomeKind.FAIL, error="boom")
        more: list[tuple[str, Callable[[], object]]] = [
            (
                "heartbeat",
                lambda: ops.heartbeat(conn, leases={small.id: token}, lease_seconds=30, now=later),
            ),
            # A failure: the job is dead-lettered (its row copied), then retried and cancelled.
            ("finish", lambda: ops.finish(conn, [failure], now=later)),
            ("retry", lambda: ops.retry(conn, small.id, now=later)),
            ("cancel", lambda: ops.cancel(conn, small.id, now=later)),
        ]
        for name, call in more:
            read, results[name] = _reads(call)
            assert read < _BOUND, f"{name} read {read:,} bytes; one payload is {_BIG:,}"
        assert results["heartbeat"] == set()  # the lease was extended
        assert results["finish"] == [True]
        assert results["retry"].state is JobState.PENDING
        assert results["cancel"].state is JobState.CANCELLED
    finally:
        conn.close()


def _plan(conn: sqlite3.Connection, sql: str, params: Any) -> list[str]:
    return [row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]


def test_hot_statements_read_jobs_through_covering_indexes_or_by_rowid(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    conn = _open(path)
    try:
        migrate(conn, str(path))
        filters, names = _filters(["q"], ["n"])
        statements: dict[str, tuple[str, object]] = {
            "claim": (_claim_sql(None, None), ["w", 1, 2, 3, 4, 10]),
            "claim of queues and names": (
                _claim_sql(2, 1),
                ["w", 1, 2, 3, 4, "q", "r", "n", 10],
            ),
            "limited queue's candidates": (
                _QUEUE_JOBS.format(names=" AND name IN (?)") + " LIMIT ?",
                [1, "q", "n", 3],
            ),
            "next_run_at": (_NEXT_RUN_AT.format(filters=""), []),
            "next_run_at filtered": (_NEXT_RUN_AT.format(filters=filters), names),
            "count_runnable": (
                _COUNT_RUNNABLE.format(tenant=" AND tenant = :tenant"),
                {"now": 1, "excluded": "[]", "tenant": "t"},
            ),
            "count_jobs": (_COUNT_JOBS.format(filters=""), []),
            "count_jobs filtered": (
                _COUNT_JOBS.format(filters=" AND queue = ? AND tenant = ?"),
                ["q", "t"] * 3,
            ),
            "throughput of a tenant": (
                _THROUGHPUT.format(filters=" AND tenant = :tenant"),
                {"size": 60, "since": 0, "tenant": "t"},
            ),
            "rescue check": (_RESCUE_CHECK_WORKERS, {"now": 1, "stale": 1}),
            "prune": (_PRUNE_JOBS, ["completed", 1, 10]),
        }
        for name, (sql, params) in statements.items():
            plan = _plan(conn, sql, params)
            on_jobs = [step for step in plan if step.startswith(("SCAN jobs", "SEARCH jobs"))]
            assert on_jobs, (name, plan)
            for step in on_jobs:
                assert "USING COVERING INDEX" in step or "(rowid=?)" in step, (name, plan)
    finally:
        conn.close()


def test_lookups_by_id_do_not_compare_whole_rows(tmp_path: Path) -> None:
    """``jobs`` is a rowid table: a WITHOUT ROWID one keeps whole rows in its b-tree's keys."""
    path = tmp_path / "jobs.db"
    conn = _open(path)
    try:
        migrate(conn, str(path))
        (sql,) = conn.execute("SELECT sql FROM sqlite_schema WHERE name = 'jobs'").fetchone()
        assert "WITHOUT ROWID" not in sql.upper()
        # Every column that follows the payload in a row is reached through its overflow pages.
        columns = [row[1] for row in conn.execute("PRAGMA table_info(jobs)")]
        assert columns[-4:] == ["last_error", "headers", "payload", "result"], columns
    finally:
        conn.close()


def test_count_jobs_agrees_with_a_count_of_every_row(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    conn = _open(path)
    try:
        migrate(conn, str(path))
        now = utcnow()
        jobs = [
            make_new_job(queue=q, tenant=t, max_attempts=1)
            for q in ("a", "b")
            for t in (None, "x", "y")
            for _ in range(6)
        ]
        ops.enqueue(conn, jobs)
        ops.enqueue(conn, [make_new_job(queue="a", run_at=now + timedelta(hours=1))])
        for queue in ("a", "b"):
            claimed = _claim(conn, queues=[queue], limit=12)
            kinds = [OutcomeKind.COMPLETED, OutcomeKind.FAIL, OutcomeKind.RETRY]
            outcomes = [
                Outcome(
                    job_id=j.id,
                    attempt_token=j.attempt_token or "",
                    kind=kinds[i % 3],
                    error=None if i % 3 == 0 else "boom",
                )
                for i, j in enumerate(claimed[:9])
            ]
            ops.finish(conn, outcomes, now=now)
        for job in ops.list_jobs(conn, JobFilter(state=JobState.PENDING, limit=5)):
            ops.cancel(conn, job.id, now=now)
        (again,) = ops.list_jobs(conn, JobFilter(state=JobState.PENDING, limit=1))
        ops.cancel(conn, again.id, now=now)
        ops.retry(conn, again.id, now=now)  # cancelled, then pending again
        states = {state for (state,) in conn.execute("SELECT DISTINCT state FROM jobs")}
        assert states == {s.value for s in JobState}, states
        for queue_filter in (None, "a", "zz"):
            for tenant in (None, "x", "y"):
                where, params = where_equal((("queue", queue_filter), ("tenant", tenant)))
                sql = "SELECT state, count(*) FROM jobs"
                if where:
                    sql += " WHERE " + " AND ".join(where)
                every_row = {
                    JobState(s): n for s, n in conn.execute(sql + " GROUP BY state", params)
                }
                assert ops.count_jobs(conn, queue=queue_filter, tenant=tenant) == every_row, (
                    queue_filter,
                    tenant,
                )
    finally:
        conn.close()
