"""No stats, listing or retention call holds the server for long (issue 16, finding 10).

Before, ``throughput`` for a tenant read every finished job of the window, anybody's, in one
script: over 300,000 finished jobs of another tenant it held the server for 363 ms, and every
other client's command (a claim, a PING) waited as long, while each dashboard tab asks for
``/v1/stats`` every 2 seconds. Now every script call does bounded work.

On a private ``redis-server`` holding 300,000 finished jobs (and 100,000 dead letters) of
tenant ``big``, the calls a dashboard and an operator make are run while another process
PINGs the server without pause. Each script call's cost is measured as the server main
thread's CPU time (``INFO cpu``) around it: on this shared machine wall-clock figures swing
with other processes' load, CPU time does not. The PING latencies are checked too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from dispatch_core.models import DLQFilter, JobFilter, Outcome, OutcomeKind, utcnow
from dispatch_core.states import JobState
from dispatch_core.store import PruneCutoffs
from dispatch_core.testing import make_new_job
from dispatch_plugins.redis import RedisStore, codec as c

from ._bulk import build_finished
from ._server import PrivateRedis

pytestmark = pytest.mark.slow

BIG_COMPLETED, BIG_FAILED = 200_000, 100_000
#: Redis commands one script call may run (the work a script does is its commands; each is
#: O(log n) here but for ZINTERCARD, bounded by COUNT_BUDGET, and ranges of a step's size).
#: The unbounded scripts ran hundreds of thousands for this data.
MAX_SCRIPT_COMMANDS = 2_500
#: Server CPU time (ms) 99 % of the script calls stay under: the largest steps cost about a
#: millisecond, and up to five times that while other processes load both cores.
MAX_SCRIPT_P99_MS = 20.0
#: Server CPU time (ms) no script call may take: the unbounded scripts took 230 to 980 ms for
#: this data; a bounded one is charged up to about 25 ms once in a while on a loaded machine.
MAX_SCRIPT_CPU_MS = 100.0

_PROBER = textwrap.dedent(
    """
    import json, sys, threading, time
    import redis
    client = redis.Redis(port=int(sys.argv[1]))
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    lat = []
    print("ready", flush=True)
    while not done.is_set():
        t = time.perf_counter()
        client.ping()
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    n = len(lat)
    print(json.dumps({"n": n, "p50": lat[n // 2], "p99": lat[int(n * 0.99)],
                      "p999": lat[int(n * 0.999)], "max": lat[-1]}))
    """
)


class Prober:
    """Another process that PINGs the server without pause until stopped, and reports the
    latencies it saw (ms)."""

    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _PROBER, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> dict[str, float]:
        out, _ = self.proc.communicate("", timeout=60)
        result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
        return result


#: What the measurement itself and the prober run.
_NOT_COUNTED = frozenset({"cmdstat_info", "cmdstat_ping", "cmdstat_evalsha", "cmdstat_script|load"})


@pytest.fixture
def server(tmp_path: Path, redis_base: str) -> Iterator[PrivateRedis]:
    srv = PrivateRedis(tmp_path, durable=False)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


async def test_stats_and_listings_never_hold_the_server(server: PrivateRedis) -> None:
    client = redis.Redis(port=server.port, decode_responses=True)
    store = RedisStore(server.url + "?prefix=big")
    await store.open()
    await store.migrate()
    try:
        now = utcnow()
        build_finished(
            client,
            "big",
            count=BIG_COMPLETED + BIG_FAILED,
            t0_us=int(c.us(now - timedelta(minutes=59))),
            span_us=58 * 60 * 1_000_000,
            tenant="big",
            queue="shared",
            fail_every=3,
        )
        small = await _small_tenant(store)
        now = utcnow()

        def server_cpu_ms() -> float:
            info = client.info("cpu")
            return 1000 * float(
                info["used_cpu_sys_main_thread"] + info["used_cpu_user_main_thread"]
            )

        def commands() -> int:
            """Commands run so far, but for those of the measurement and of the prober."""
            stats = client.info("commandstats")
            return sum(int(v["calls"]) for k, v in stats.items() if k not in _NOT_COUNTED)

        costs: list[tuple[float, str]] = []
        counts: list[tuple[int, str]] = []
        real = store._call

        async def measured(name: str, *args: Any) -> Any:
            n, before = commands(), server_cpu_ms()
            try:
                return await real(name, *args)
            finally:
                label = name + repr(args[:6])
                costs.append((server_cpu_ms() - before, label))
                counts.append((commands() - n, label))

        store._call = measured  # type: ignore[method-assign]
        prober = Prober(server.port)
        try:
            await _dashboard_and_operator_calls(store, small, now)
        finally:
            pings = prober.stop()
    finally:
        await store.close()
        client.close()

    ranked = sorted(costs, reverse=True)
    p99 = ranked[len(ranked) // 100][0]
    busiest = max(counts)
    report = (
        f"{len(costs)} script calls; most commands in one: {busiest}; server CPU: p99 "
        f"{p99:.2f} ms, slowest {ranked[:3]}; PING (ms): {pings}"
    )
    print(report)
    assert len(costs) > 1000, report  # the big walks went in many steps
    assert busiest[0] <= MAX_SCRIPT_COMMANDS, report
    # CPU time and latencies swing with other processes' load on this machine (the server
    # and the prober are preempted): these bounds are loose; a held server shows as hundreds
    # of milliseconds
    assert p99 < MAX_SCRIPT_P99_MS, report
    assert ranked[0][0] < MAX_SCRIPT_CPU_MS, report
    assert pings["n"] > 1000, report
    assert pings["p99"] < 20, report
    assert pings["max"] < 200, report


async def _small_tenant(store: RedisStore) -> dict[JobState, list[str]]:
    """Tenant ``small`` in the same queue: 2 completed, 1 failed (dead-lettered), 1 cancelled,
    1 running, 1 pending."""
    jobs = await store.enqueue(
        [make_new_job("ok.job", queue="shared", tenant="small", max_attempts=1) for _ in range(5)]
    )
    claimed = await store.claim(
        worker_id="wkr_s", queues=None, names=None, limit=5, lease_seconds=600, now=utcnow()
    )
    assert len(claimed) == 5
    ok, ok2, bad, gone, running = claimed
    now = utcnow()
    kinds = [(ok, OutcomeKind.COMPLETED), (ok2, OutcomeKind.COMPLETED), (bad, OutcomeKind.FAIL)]
    outcomes = [
        Outcome(job_id=j.id, attempt_token=j.attempt_token or "", kind=k, error="x")
        for j, k in kinds
    ]
    assert await store.finish(outcomes, now=now) == [True] * 3
    await store.cancel(gone.id, now=now)
    (pending,) = await store.enqueue([make_new_job("ok.job", queue="shared", tenant="small")])
    assert {j.id for j in jobs} == {j.id for j in claimed}
    return {
        JobState.COMPLETED: [ok.id, ok2.id],
        JobState.FAILED: [bad.id],
        JobState.CANCELLED: [gone.id],
        JobState.RUNNING: [running.id],
        JobState.PENDING: [pending.id],
    }


async def _dashboard_and_operator_calls(
    store: RedisStore, small: dict[JobState, list[str]], now: Any
) -> None:
    since = now - timedelta(hours=1)
    later = now + timedelta(seconds=1)
    mine = {state: len(ids) for state, ids in small.items()}
    big = {JobState.COMPLETED: BIG_COMPLETED, JobState.FAILED: BIG_FAILED}

    # /v1/stats of each tenant and of the operator
    for tenant, want in (("small", mine), ("big", big), (None, None)):
        counts = await store.count_jobs(tenant=tenant)
        if want is not None:
            assert counts == want
        buckets = await store.throughput(since=since, bucket_seconds=60, tenant=tenant)
        done = sum(b.completed for b in buckets), sum(b.failed for b in buckets)
        expected = {
            "small": (2, 1),
            "big": (BIG_COMPLETED, BIG_FAILED),
            None: (BIG_COMPLETED + 2, BIG_FAILED + 1),
        }
        assert done == expected[tenant]
    assert await store.count_dlq(tenant="small") == 1
    assert await store.count_dlq(tenant="big") == BIG_FAILED
    # fine buckets over the whole window: one step per hundred buckets
    fine = await store.throughput(since=since, bucket_seconds=1)
    assert sum(b.completed for b in fine) == BIG_COMPLETED + 2
    # a queue, and a queue and a tenant: the big intersections, walked in steps
    assert await store.count_jobs(queue="shared") == {
        s: big.get(s, 0) + mine.get(s, 0) for s in JobState if big.get(s, 0) + mine.get(s, 0)
    }
    assert await store.count_jobs(queue="shared", tenant="small") == mine
    assert await store.count_jobs(queue="shared", tenant="big") == big
    tp = await store.throughput(since=since, bucket_seconds=60, queue="shared", tenant="big")
    assert sum(b.failed for b in tp) == BIG_FAILED
    assert await store.count_dlq(queue="shared", tenant="big", replayed=False) == BIG_FAILED
    assert await store.count_dlq(tenant="big", before=later) == BIG_FAILED
    assert await store.count_dlq(tenant="small", before=later) == 1
    # listings: a tenant's, a page of a big one, and a sparse intersection (no match at all)
    assert len(await store.list_jobs(JobFilter(tenant="small"))) == 6
    assert len(await store.list_jobs(JobFilter(tenant="big", limit=1000))) == 1000
    sparse = JobFilter(state=JobState.COMPLETED, name="bad.job", limit=10)
    assert await store.list_jobs(sparse) == []
    assert len(await store.list_dlq(DLQFilter(tenant="small"))) == 1
    assert len(await store.list_dlq(DLQFilter(name="bad.job", limit=500))) == 500
    assert [q.depth for q in await store.list_queues(now=now)] == [1]
    assert await store.count_runnable(now=later, tenant="small") != []
    assert await store.rescue_expired(now=now, worker_timeout=60) == []
    # a tenant purges its dead letters; retention prunes big's oldest
    assert await store.purge_dlq(before=later, tenant="small") == 1
    cut = now - timedelta(minutes=30)
    assert await store.prune(PruneCutoffs(completed=cut, dlq=cut), limit=5_000) == 10_000
