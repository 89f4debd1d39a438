"""How the PostgreSQL store enforces queue rows: the one-statement claim stays one statement,
limited queues are claimed under their row's lock, and the limits hold across processes.

The rules themselves are in the conformance suite; these tests pin down this store's costs
and plans, and run the limits under real concurrency.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import multiprocessing
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dispatch_core.models import utcnow
from dispatch_core.queues import QueueConfig
from dispatch_core.testing import make_new_job
from dispatch_plugins.postgres import PostgresStore, ops, runner as runner_module
from dispatch_plugins.postgres.connection import run_async
from dispatch_plugins.postgres.ops import Stmt

HERE = Path(__file__).parent


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every statement the store runs from here on, in order."""
    sent: list[str] = []
    real = run_async

    async def counting(conn: Any, steps: ops.Steps[Any], *, own: bool, guard: Any = None) -> Any:
        def spy() -> ops.Steps[Any]:
            reply: Any = None
            while True:
                try:
                    step = steps.send(reply)
                except StopIteration as stop:
                    return stop.value
                if isinstance(step, Stmt):
                    sent.append(step.sql)
                reply = yield step

        return await real(conn, spy(), own=own, guard=guard)

    monkeypatch.setattr(runner_module, "run_async", counting)
    return sent


async def claim(store: PostgresStore, limit: int = 10, **kw: Any) -> list[Any]:
    args: dict[str, Any] = {
        "worker_id": "wkr_test",
        "queues": None,
        "names": None,
        "limit": limit,
        "lease_seconds": 30.0,
        "now": utcnow(),
    }
    args.update(kw)
    return await store.claim(**args)


async def test_without_queue_rows_a_claim_is_one_statement(
    store: PostgresStore, statements: list[str]
) -> None:
    await store.enqueue([make_new_job() for _ in range(5)])
    statements.clear()
    assert len(await claim(store, limit=3)) == 3
    assert len(await claim(store, limit=3, queues=["default"], names=["conformance.job"])) == 2
    assert await claim(store) == []
    assert len(statements) == 3


async def test_an_idle_limited_queue_costs_the_claim_nothing(
    store: PostgresStore, statements: list[str]
) -> None:
    # limited queues with no due job, or at their cap, leave the claim one statement
    await store.set_queue(QueueConfig(name="capped", concurrency=1))
    await store.set_queue(QueueConfig(name="later", rate=1.0))
    await store.enqueue(
        [make_new_job(queue="capped") for _ in range(3)]
        + [make_new_job(queue="later", run_at=utcnow() + timedelta(hours=1))]
        + [make_new_job() for _ in range(20)]
    )
    assert [j.queue for j in await claim(store)] == ["default"] * 10
    # that claim was full while "capped" had a due job: the next one takes it first
    assert Counter(j.queue for j in await claim(store)) == {"default": 9, "capped": 1}
    statements.clear()
    assert [j.queue for j in await claim(store)] == ["default"]
    assert await claim(store) == []
    assert len(statements) == 2


async def test_a_limited_queue_is_not_starved_by_a_backlog(store: PostgresStore) -> None:
    # the claim that fills its limit from other queues notes the waiting limited queue; the
    # next claim goes through the limits first, in claim order across every queue
    await store.set_queue(QueueConfig(name="capped", concurrency=5))
    await store.enqueue(
        [make_new_job(priority=0) for _ in range(50)]
        + [make_new_job(queue="capped", priority=10) for _ in range(3)]
    )
    assert [j.queue for j in await claim(store, limit=2)] == ["default", "default"]
    assert [j.queue for j in await claim(store, limit=2)] == ["capped", "capped"]
    assert [j.queue for j in await claim(store, limit=2)] == ["default", "default"]
    assert [j.queue for j in await claim(store, limit=2)] == ["capped", "default"]


async def test_tenants_at_their_cap_do_not_hide_the_others(store: PostgresStore) -> None:
    # one tenant's long backlog sits first in claim order; the scan goes past it
    await store.set_queue(QueueConfig(name="shared", concurrency=2, per_tenant=True))
    await store.enqueue(
        [make_new_job(queue="shared", tenant="big", priority=5) for _ in range(40)]
        + [make_new_job(queue="shared", tenant=f"t{i}") for i in range(6)]
        + [make_new_job(queue="shared") for _ in range(3)]
    )
    got = await claim(store, limit=20)
    expected: dict[str | None, int] = {"big": 2, None: 2}
    expected.update({f"t{i}": 1 for i in range(6)})
    assert Counter(j.tenant for j in got) == expected
    assert await claim(store, limit=20) == []


async def test_concurrency_and_rate_together(store: PostgresStore) -> None:
    await store.set_queue(QueueConfig(name="q", concurrency=3, rate=2.0, burst=4))
    await store.enqueue([make_new_job(queue="q") for _ in range(20)])
    t = utcnow()
    first = await claim(store, now=t)
    assert len(first) == 3  # the cap, though the bucket holds 4
    assert await claim(store, now=t + timedelta(seconds=10)) == []
    for job in first:
        await store.cancel(job.id, now=t)
    # 1 token left, 10 s of refill capped at 4
    assert len(await claim(store, now=t + timedelta(seconds=10))) == 3


async def test_next_run_at_skips_paused_queues(store: PostgresStore) -> None:
    soon, later = utcnow() - timedelta(seconds=5), utcnow() + timedelta(hours=1)
    await store.enqueue(
        [make_new_job(queue="held", run_at=soon), make_new_job(queue="open", run_at=later)]
    )
    assert await store.next_run_at(queues=None, names=None) == soon
    await store.pause_queue("held", paused=True)
    # a paused queue's due job would make an idle worker poll without pause
    assert await store.next_run_at(queues=None, names=None) == later
    assert await store.next_run_at(queues=["held"], names=None) is None


async def test_sessions_plan_once_and_never_jit(store: PostgresStore) -> None:
    pool = await store._get_pool()
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT current_setting('jit'), current_setting('plan_cache_mode'), "
            "current_setting('enable_sort')"
        )
        assert await cur.fetchone() == ("off", "force_generic_plan", "off")


async def test_the_limited_queue_probe_uses_the_queue_index(
    pg_dsn: str, store: PostgresStore
) -> None:
    # With statistics that say every job is in one queue, the probe for a limited queue's due
    # jobs must not walk the other queues' backlog.
    await store.enqueue([make_new_job() for _ in range(3000)])
    await store.set_queue(QueueConfig(name="capped", concurrency=1))
    q = store._q
    now = utcnow()
    params = {
        "worker_id": "w",
        "now": now,
        "until": now + timedelta(seconds=30),
        "limit": 10,
        "queues": ["default", "capped"],
        "names": ["conformance.job"],
    }
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'ANALYZE "{store.schema}".jobs')
        conn.execute("SET enable_sort = off; SET jit = off")
        for sql in (q.claim(True, True), q.claim_lock(True, True)):
            rows = conn.execute(f"EXPLAIN {sql}", params, binary=True).fetchall()
            plan = "\n".join(row[0] for row in rows)
            assert "Seq Scan on jobs" not in plan, plan
            assert "jobs_queue_idx" in plan, plan


@pytest.mark.slow
def test_limits_hold_across_processes(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(HERE))  # spawned children import the helpers by name
    helpers = importlib.import_module("_mp_helpers")
    cap, rate, burst = 2, 200.0, 5
    tenants = ["a", "b", "c", None]

    async def setup() -> int:
        store = PostgresStore(pg_url)
        await store.open()
        await store.migrate()
        try:
            await store.set_queue(QueueConfig(name="per-tenant", concurrency=cap, per_tenant=True))
            await store.set_queue(QueueConfig(name="metered", rate=rate, burst=burst))
            jobs = await store.enqueue(
                [make_new_job(queue="per-tenant", tenant=t) for t in tenants for _ in range(30)]
                + [make_new_job(queue="metered") for _ in range(150)]
                + [make_new_job(queue="free", priority=i % 3) for i in range(300)]
            )
            return len(jobs)
        finally:
            await store.close()

    total = asyncio.run(setup())
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    outs = [tmp_path / f"worker-{n}.json" for n in range(4)]
    procs = [
        ctx.Process(target=helpers.drain_limited, args=(pg_url, n, start, str(out)))
        for n, out in enumerate(outs)
    ]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0

    held = [tuple(row) for out in outs for row in json.loads(out.read_text())]
    assert len(held) == total
    # per tenant, the processes never held more than the cap at once
    events: dict[Any, list[tuple[float, int]]] = defaultdict(list)
    for queue, tenant, _now, got, gone in held:
        if queue == "per-tenant":
            events[tenant] += [(got, 1), (gone, -1)]
    assert set(events) == set(tenants)
    for tenant, marks in events.items():
        level = peak = 0
        for _, step in sorted(marks, key=lambda m: (m[0], m[1])):  # ends before starts
            level += step
            peak = max(peak, level)
        assert peak <= cap, (tenant, peak)
    # the metered queue never started more than the bucket allows in any window of claims
    starts = sorted(now for queue, _t, now, _g, _e in held if queue == "metered")
    # Each process stamps its claim's `now` before the claim's transaction commits, so under
    # load a claim stamped earlier can take its tokens after one stamped later: the bucket then
    # refills nothing for it (its clock never goes back), but sorted by stamps the window
    # looks a token or two fuller than the bucket ever was. Allow 20 ms of such skew (4 tokens
    # here): a limiter that did not hold would let the 150 jobs through far faster than that.
    # (Epoch floats add ~2e-7 s of rounding, well inside it.)
    slack = rate * 0.02
    for i, first in enumerate(starts):
        for j in range(i, len(starts)):
            assert j - i + 1 <= burst + rate * (starts[j] - first) + slack, (i, j)
