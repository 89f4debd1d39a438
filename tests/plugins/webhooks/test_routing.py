"""Which endpoint gets which event: by type pattern and by tenant; no delivery loops."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dispatch_core import Engine, tenant_scope
from dispatch_plugins.webhooks import DELIVER_JOB, RelayConfigError

sys.path.insert(0, str(Path(__file__).parent))

from _relay_helpers import Receiver, endpoint, fast_relay, settle


async def test_endpoints_get_only_the_types_they_subscribe_to(
    receiver_factory: Callable[..., Receiver], make_engine: Callable[..., Engine]
) -> None:
    failures = receiver_factory()
    jobs = receiver_factory()
    nothing = receiver_factory()
    engine = make_engine(
        fast_relay(
            [
                endpoint("failures", failures, events=["dispatch.job.failed", "dispatch.job.dlq"]),
                endpoint("jobs", jobs, events=["dispatch.job.*"]),
                endpoint("workflows", nothing, events=["dispatch.workflow.*"]),
            ]
        )
    )

    @engine.job(name="app.ok")
    async def ok() -> None: ...

    @engine.job(name="app.boom", max_retries=0)
    async def boom() -> None:
        raise RuntimeError("boom")

    await ok.aenqueue()
    await boom.aenqueue()
    await settle(engine)

    assert sorted(failures.types()) == ["dispatch.job.dlq", "dispatch.job.failed"]
    assert sorted(jobs.types()) == sorted(
        [
            "dispatch.job.enqueued",
            "dispatch.job.started",
            "dispatch.job.completed",
            "dispatch.job.enqueued",
            "dispatch.job.started",
            "dispatch.job.failed",
            "dispatch.job.dlq",
        ]
    )
    assert nothing.requests == []
    # the deliveries ran as jobs, and none of them produced an event of its own
    assert len(await engine.alist_jobs(name=DELIVER_JOB)) == 9
    assert all(e["data"]["job_name"] != DELIVER_JOB for e in jobs.events)


async def test_tenant_endpoints_see_only_their_tenant_and_operators_see_all(
    receiver_factory: Callable[..., Receiver], make_engine: Callable[..., Engine]
) -> None:
    operator = receiver_factory()
    acme = receiver_factory()
    bravo = receiver_factory()
    kinds = ["dispatch.job.enqueued"]
    engine = make_engine(
        fast_relay(
            [
                endpoint("operator", operator, events=kinds),
                endpoint("acme", acme, events=kinds, tenant="acme"),
                endpoint("bravo", bravo, events=kinds, tenant="bravo"),
            ]
        )
    )

    @engine.job(name="app.noop")
    async def noop() -> None: ...

    a = await noop.aenqueue(tenant="acme")
    with tenant_scope("bravo"):
        b = await noop.aenqueue()
    untenanted = await noop.aenqueue()
    await settle(engine)

    assert sorted(e["data"]["job_id"] for e in operator.events) == sorted(
        [a.id, b.id, untenanted.id]
    )
    assert [e["data"]["job_id"] for e in acme.events] == [a.id]
    assert [e["tenant"] for e in acme.events] == ["acme"]
    assert [e["data"]["job_id"] for e in bravo.events] == [b.id]
    # each delivery job lives in its endpoint's tenant: the operator's have none
    deliveries = await engine.alist_jobs(name=DELIVER_JOB)
    by_endpoint = sorted((j.payload["endpoint"], j.tenant or "-") for j in deliveries)
    assert by_endpoint == [
        ("acme", "acme"),
        ("bravo", "bravo"),
        ("operator", "-"),
        ("operator", "-"),
        ("operator", "-"),
    ]
    acme_jobs = await engine.alist_jobs(name=DELIVER_JOB, tenant="acme")
    assert [j.payload["endpoint"] for j in acme_jobs] == ["acme"]


async def test_deliveries_are_enqueued_in_the_endpoint_tenant_whatever_the_hook_scope(
    receiver_factory: Callable[..., Receiver], make_engine: Callable[..., Engine]
) -> None:
    ops = receiver_factory()
    acme = receiver_factory()
    kinds = ["dispatch.job.enqueued"]
    engine = make_engine(
        fast_relay(
            [
                endpoint("ops", ops, events=kinds),
                endpoint("acme", acme, events=kinds, tenant="acme"),
            ]
        )
    )

    @engine.job(name="app.noop")
    async def noop() -> None: ...

    # the engine's hook task is first started inside a tenant scope: it must not leak
    with tenant_scope("acme"):
        await noop.aenqueue()
    await noop.aenqueue(tenant=None)
    await engine.hooks.flush()
    deliveries = await engine.alist_jobs(name=DELIVER_JOB)
    assert sorted((j.payload["endpoint"], j.tenant or "") for j in deliveries) == [
        ("acme", "acme"),
        ("ops", ""),
        ("ops", ""),
    ]


def test_an_engine_takes_one_relay(receiver: Receiver) -> None:
    first = fast_relay([endpoint("a", receiver)])
    second = fast_relay([endpoint("b", receiver)])
    with pytest.raises(RelayConfigError, match="one Relay"):
        Engine("memory://", load_entrypoints=False, plugins=[first, second])
