"""``GET /v1/jobs/unhandled`` and the ``unhandled`` rows of ``/v1/stats``: runnable jobs that no
running worker takes, counted by queue and name, for the caller's tenant only.

The jobs no worker knows are enqueued by a second engine on the same store that defines names
the served engine (and its worker) does not: a producer deployed with a module the workers lack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest

from dispatch_core import Engine, WorkerInfo, WorkerState, tenant_scope
from dispatch_core._ids import new_id
from dispatch_core.models import utcnow
from dispatch_plugins.admin.auth import Token
from dispatch_plugins.admin.routes import stats

#: Names only the producer defines: the served workers never registered them.
WELCOME = "__main__.send_welcome"
OLD = "billing.invoice_v1"


def producer(engine: Engine) -> Engine:
    """Another deployment's engine on ``engine``'s store, with jobs the workers lack."""
    other = Engine(engine.store, load_entrypoints=False)

    @other.job(name=WELCOME, queue="mail")
    async def welcome(n: int) -> None:
        return None

    @other.job(name=OLD)
    async def invoice(n: int) -> None:
        return None

    @other.job(name="send")  # also known to the workers: handled
    async def send(n: int) -> None:
        return None

    return other


async def register_worker(engine: Engine, **fields: Any) -> WorkerInfo:
    """A running worker's row, as its heartbeat writes it: by default it runs the served
    engine's jobs on every queue; ``fields`` change that."""
    now = utcnow()
    row = WorkerInfo(
        id=new_id("wkr"),
        hostname="web-1",
        pid=100,
        queues=None,
        concurrency=4,
        version="0.test",
        started_at=now,
        last_seen=now,
        names=tuple(sorted(engine.jobs)),
    )
    row = attrs.evolve(row, **fields)
    await engine.store.register_worker(row)
    return row


async def enqueue_unknown(engine: Engine) -> None:
    """Tenant A: 3 welcome mails and an old invoice; tenant B: 2 old invoices; no tenant: 1
    welcome mail. Plus jobs that are not unhandled: a known name, and an unknown one not due."""
    other = producer(engine)
    with tenant_scope("A"):
        for n in range(3):
            await other.aenqueue(WELCOME, n)
        await other.aenqueue(OLD, 1)
        await other.aenqueue("send", 1)
    with tenant_scope("B"):
        await other.aenqueue(OLD, 2)
        await other.aenqueue(OLD, 3)
        await other.aenqueue(WELCOME, 9, delay=3600)
    await other.aenqueue(WELCOME, 4)


def rows(*items: tuple[str, str, int]) -> dict[str, Any]:
    return {"items": [{"queue": q, "name": n, "count": c} for q, n, c in items]}


ALL = rows(("default", OLD, 3), ("mail", WELCOME, 4))
ONLY_A = rows(("default", OLD, 1), ("mail", WELCOME, 3))
ONLY_B = rows(("default", OLD, 2))


async def test_the_operator_sees_every_tenants_rows(api: Any) -> None:
    await register_worker(api.engine)
    assert await api.ok("GET", "/jobs/unhandled") == rows()
    await enqueue_unknown(api.engine)
    assert await api.ok("GET", "/jobs/unhandled") == ALL
    assert await api.ok("GET", "/jobs/unhandled", params={"tenant": "A"}) == ONLY_A
    assert await api.ok("GET", "/jobs/unhandled", params={"tenant": "C"}) == rows()
    # The engine says the same.
    assert [(r.queue, r.name, r.count) for r in await api.engine.aunhandled_jobs()] == [
        (i["queue"], i["name"], i["count"]) for i in ALL["items"]
    ]


async def test_a_tenant_token_sees_only_its_tenants_rows(api: Any) -> None:
    await register_worker(api.engine)
    await enqueue_unknown(api.engine)
    assert await api.ok("GET", "/jobs/unhandled", token=api.A) == ONLY_A
    assert await api.ok("GET", "/jobs/unhandled", token=api.A, params={"tenant": "A"}) == ONLY_A
    b = await api.get("/jobs/unhandled", token=api.B)
    assert b.json() == ONLY_B
    # Neither A's name nor A's counts show in B's answer.
    assert WELCOME not in b.text
    error = api.error(
        await api.get("/jobs/unhandled", token=api.B, params={"tenant": "A"}), 403, "operator_only"
    )
    assert error["details"] == {"field": "tenant"}


async def test_a_worker_that_runs_the_name_handles_it(api: Any) -> None:
    engine = api.engine
    await register_worker(engine)
    await enqueue_unknown(engine)
    # A worker of the mail queue that knows the welcome mail: that row goes, the other stays.
    mailer = await register_worker(engine, queues=("mail",), names=(WELCOME,))
    assert await api.ok("GET", "/jobs/unhandled") == rows(("default", OLD, 3))
    # Once it stops, its names no longer count.
    await engine.store.register_worker(attrs.evolve(mailer, state=WorkerState.STOPPED))
    assert await api.ok("GET", "/jobs/unhandled") == ALL


async def test_with_no_running_worker_every_runnable_job_waits(api: Any) -> None:
    await enqueue_unknown(api.engine)
    assert await api.ok("GET", "/jobs/unhandled", token=api.A) == rows(
        ("default", OLD, 1), ("default", "send", 1), ("mail", WELCOME, 3)
    )


async def test_it_needs_the_jobs_read_scope(make_api: Callable[..., Any], api: Any) -> None:
    tokens = [
        Token(name="dlq", secret="dlq-reader-0123456789", scopes=frozenset({"dlq:read"})),
        Token(name="jobs", secret="jobs-reader-012345678", scopes=frozenset({"jobs:read"})),
    ]
    async with make_api(tokens=tokens) as limited:
        error = limited.error(
            await limited.get("/jobs/unhandled", token="dlq-reader-0123456789"), 403, "forbidden"
        )
        assert error["details"] == {"required": "jobs:read"}
        assert await limited.ok("GET", "/jobs/unhandled", token="jobs-reader-012345678") == rows()
    assert await api.ok("GET", "/jobs/unhandled", token=api.READER) == rows()
    api.error(await api.get("/jobs/unhandled", token=None), 401, "unauthorized")


@pytest.mark.parametrize(
    ("params", "field"),
    [({"queue": "mail"}, "queue"), ({"tenant": ""}, "tenant"), ({"tenant": "x" * 201}, "tenant")],
)
async def test_bad_parameters_are_named(api: Any, params: dict[str, str], field: str) -> None:
    error = api.error(await api.get("/jobs/unhandled", params=params), 400, "invalid_request")
    assert error["details"]["field"] == field


# -- /v1/stats ------------------------------------------------------------------------------------


class Clock:
    """The stats cache's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(stats, "_clock", clock)
    return clock


async def test_stats_carry_the_rows_of_the_callers_tenant(api: Any, clock: Clock) -> None:
    await register_worker(api.engine)
    await enqueue_unknown(api.engine)
    assert (await api.ok("GET", "/stats"))["unhandled"] == ALL["items"]
    # The operator's rows are cached; a tenant's are its own, never the operator's.
    assert (await api.ok("GET", "/stats", token=api.A))["unhandled"] == ONLY_A["items"]
    b = await api.get("/stats", token=api.B)
    assert b.json()["unhandled"] == ONLY_B["items"]
    assert WELCOME not in b.text
    assert (await api.ok("GET", "/stats", params={"tenant": "B"}))["unhandled"] == ONLY_B["items"]


async def test_stats_reuse_the_rows_for_a_few_seconds(api: Any, clock: Clock) -> None:
    engine = api.engine
    await register_worker(engine)
    assert (await api.ok("GET", "/stats"))["unhandled"] == []
    assert (await api.ok("GET", "/stats", token=api.A))["unhandled"] == []
    await enqueue_unknown(engine)
    clock.now += stats.UNHANDLED_TTL - 0.5
    # Still the cached answer in /stats; the route itself is always fresh.
    assert (await api.ok("GET", "/stats"))["unhandled"] == []
    assert (await api.ok("GET", "/stats", token=api.A))["unhandled"] == []
    assert await api.ok("GET", "/jobs/unhandled") == ALL
    clock.now += 1
    assert (await api.ok("GET", "/stats"))["unhandled"] == ALL["items"]
    assert (await api.ok("GET", "/stats", token=api.A))["unhandled"] == ONLY_A["items"]
    # Expired entries are dropped, so tenants an operator names do not pile up.
    for n in range(5):
        await api.ok("GET", "/stats", params={"tenant": f"T{n}"})
    clock.now += stats.UNHANDLED_TTL + 1
    await api.ok("GET", "/stats")
    assert set(stats._unhandled[engine]) == {None}


async def test_a_slow_count_is_reused_longer(
    api: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = api.engine
    count = engine.aunhandled_jobs

    async def slow(**kwargs: Any) -> Any:
        clock.now += 2.0  # the store took 2 s: a huge backlog
        return await count(**kwargs)

    monkeypatch.setattr(engine, "aunhandled_jobs", slow)
    assert (await api.ok("GET", "/stats"))["unhandled"] == []
    await enqueue_unknown(engine)
    # 20 times 2 s: the rows are kept 40 s rather than 10.
    clock.now += stats.UNHANDLED_COST_FACTOR * 2.0 - 1
    assert (await api.ok("GET", "/stats"))["unhandled"] == []
    clock.now += 2
    assert (await api.ok("GET", "/stats"))["unhandled"] == rows(
        ("default", OLD, 3), ("default", "send", 1), ("mail", WELCOME, 4)
    )["items"]
