"""Forged webhooks and whose deliveries are whose (issue 16, findings 1 and 4).

The attack: a token with ``jobs:write`` posts a ``webhooks.deliver`` job whose payload names
someone else's endpoint and carries an envelope of its choosing; the worker would sign it with
that endpoint's secret and a receiver checking signatures would accept it. Here the API refuses
the name, a delivery job that does not hold a real event of its endpoint's tenant and filter is
refused by the worker before anything is signed, and the operator's deliveries belong to no
tenant, so a tenant cannot see, cancel, replay or purge them. Real receivers on 127.0.0.1 show
what was, and was not, sent.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatch_core import Engine, JobState
from dispatch_core.models import utcnow
from dispatch_plugins.admin.app import admin_app
from dispatch_plugins.admin.auth import Token
from dispatch_plugins.admin.codec import format_datetime
from dispatch_plugins.webhooks import (
    DELIVER_JOB,
    Delivery,
    DeliveryRefusedError,
    Endpoint,
    Event,
    check_delivery,
)

sys.path.insert(0, str(Path(__file__).parent))

from _relay_helpers import Receiver, endpoint, fast_relay, settle

OPS = "ops-token-secret-0123"
ACME = "acme-token-secret-012"
TOKENS = [
    Token(name="ops", secret=OPS, scopes={"admin"}),
    Token(name="acme", secret=ACME, scopes={"admin"}, tenant="A"),
]


@contextlib.asynccontextmanager
async def admin(engine: Engine) -> AsyncIterator[Callable[..., Any]]:
    """``call(method, path, token, json=...)`` on the admin API of ``engine``."""
    transport = httpx.ASGITransport(app=admin_app(engine, tokens=TOKENS, dashboard=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:

        async def call(method: str, path: str, token: str, **kw: Any) -> httpx.Response:
            headers = {"Authorization": f"Bearer {token}"}
            return await client.request(method, "/v1" + path, headers=headers, **kw)

        yield call


def envelope(
    *,
    event_type: str = "dispatch.job.failed",
    tenant: str | None = None,
    data_tenant: Any = "same",
) -> dict[str, Any]:
    """An envelope as the relay makes one (``data_tenant`` differs from ``tenant`` if given)."""
    data = {
        "job_id": "job_01forged",
        "job_name": "billing.charge",
        "queue": "billing",
        "tenant": tenant if data_tenant == "same" else data_tenant,
        "attempt": 1,
        "error": "RefundIssued: 10,000 EUR to the attacker",
    }
    return Event.new(event_type, tenant=tenant, data=data).envelope()


@pytest.fixture
def receivers(receiver_factory: Callable[..., Receiver]) -> dict[str, Receiver]:
    """One verifying receiver per endpoint."""
    return {name: receiver_factory() for name in ("ops", "failures", "acme-hooks", "bravo-hooks")}


@pytest.fixture
def engine(make_engine: Callable[..., Engine], receivers: dict[str, Receiver]) -> Engine:
    """A memory engine whose relay has an operator endpoint taking everything, an operator
    endpoint taking failures only, and one endpoint for each of tenants A and B."""
    relay = fast_relay(
        [
            endpoint("ops", receivers["ops"]),
            endpoint("failures", receivers["failures"], events=["dispatch.job.failed"]),
            endpoint("acme-hooks", receivers["acme-hooks"], tenant="A"),
            endpoint("bravo-hooks", receivers["bravo-hooks"], tenant="B"),
        ]
    )
    engine = make_engine(relay)

    @engine.job(name="app.noop")
    async def noop() -> None: ...

    return engine


def sent(receivers: dict[str, Receiver]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, event) for name, r in receivers.items() for event in r.events]


async def test_no_token_can_enqueue_a_delivery_through_the_api(
    engine: Engine, receivers: dict[str, Receiver]
) -> None:
    forged = envelope()
    async with admin(engine) as call:
        for target in ("ops", "failures", "bravo-hooks", "acme-hooks"):
            body = {"name": DELIVER_JOB, "payload": {"endpoint": target, "event": forged}}
            # a tenant token: refused, with the answer any name it may not enqueue gets
            response = await call("POST", "/jobs", ACME, json=body)
            assert response.status_code == 403, response.text
            assert response.json()["error"]["code"] == "job_not_allowed"
            assert DELIVER_JOB not in response.json()["error"]["details"]["allowed"]
            # the operator's own token: the answer an unknown name gets
            response = await call("POST", "/jobs", OPS, json=body)
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert error["code"] == "unknown_job"
            assert DELIVER_JOB not in error["message"].split("registered jobs:")[1]
        # a genuine job of tenant A, through the same API: its events are delivered
        genuine = await call("POST", "/jobs", ACME, json={"name": "app.noop"})
        assert genuine.status_code == 201, genuine.text
    await settle(engine)

    assert all(d.payload["event"]["id"] != forged["id"] for d in await deliveries(engine))
    received = sent(receivers)
    assert forged["id"] not in {event["id"] for _, event in received}
    assert all(r.verified == "ok" for rx in receivers.values() for r in rx.requests)
    job_id = genuine.json()["id"]
    assert {(name, e["type"]) for name, e in received if e["data"]["job_id"] == job_id} == {
        (name, kind)
        for name in ("ops", "acme-hooks")
        for kind in ("dispatch.job.enqueued", "dispatch.job.started", "dispatch.job.completed")
    }
    assert receivers["bravo-hooks"].requests == []
    assert receivers["failures"].requests == []


async def deliveries(engine: Engine) -> list[Any]:
    return list(await engine.alist_jobs(name=DELIVER_JOB, limit=1000))


REFUSED = [
    # (case, endpoint, delivery job tenant, envelope, the check that refuses it)
    ("operator endpoint, delivery job of a tenant", "ops", "A", envelope(tenant="A"), "tenant"),
    (
        "tenant endpoint, delivery job of no tenant",
        "acme-hooks",
        None,
        envelope(tenant="A"),
        "tenant",
    ),
    ("tenant endpoint, another tenant's job", "acme-hooks", "B", envelope(tenant="B"), "tenant"),
    ("another tenant's event", "acme-hooks", "A", envelope(tenant="B"), "event tenant"),
    ("an event of no tenant", "acme-hooks", "A", envelope(tenant=None), "event tenant"),
    (
        "event and data tenants differ",
        "acme-hooks",
        "A",
        envelope(tenant="A", data_tenant="B"),
        "event tenant",
    ),
    (
        "type outside the endpoint's filter",
        "failures",
        None,
        envelope(event_type="dispatch.job.completed"),
        "event type",
    ),
    (
        "type outside the catalogue",
        "ops",
        None,
        envelope(event_type="billing.refund"),
        "event type",
    ),
    ("no type", "ops", None, {"id": "evt_x", "tenant": None, "data": {}}, "event type"),
]


@pytest.mark.parametrize(
    ("target", "tenant", "event", "check"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
async def test_a_delivery_that_is_not_a_real_event_of_its_endpoint_is_refused(
    engine: Engine,
    receivers: dict[str, Receiver],
    target: str,
    tenant: str | None,
    event: dict[str, Any],
    check: str,
) -> None:
    # enqueued in-process, the only way left to make a delivery job by hand
    job = await engine.aenqueue(DELIVER_JOB, Delivery(endpoint=target, event=event), tenant=tenant)
    await settle(engine)

    done = await engine.aget_job(job.id)
    assert done.state is JobState.FAILED
    assert done.attempt == 1  # failed for good: never retried (the relay allows 2 retries)
    assert done.last_error is not None
    assert f"DeliveryRefusedError: delivery refused by the {check} check" in done.last_error
    assert sent(receivers) == []
    [dead] = await engine.alist_dlq(name=DELIVER_JOB, tenant=tenant)
    assert dead.job_id == job.id


@pytest.mark.parametrize(
    ("target", "tenant", "event"),
    [
        ("ops", None, envelope(tenant="A")),  # an operator endpoint takes every tenant's events
        ("ops", None, envelope(tenant=None)),
        ("failures", None, envelope(event_type="dispatch.job.failed", tenant="B")),
        ("acme-hooks", "A", envelope(tenant="A")),
    ],
)
async def test_a_delivery_of_a_real_event_passes_the_checks(
    engine: Engine,
    receivers: dict[str, Receiver],
    target: str,
    tenant: str | None,
    event: dict[str, Any],
) -> None:
    job = await engine.aenqueue(DELIVER_JOB, Delivery(endpoint=target, event=event), tenant=tenant)
    await settle(engine)

    assert (await engine.aget_job(job.id)).state is JobState.COMPLETED
    [request] = receivers[target].requests
    assert request.verified == "ok"
    assert request.json == event


def test_a_refusal_shows_payload_values_escaped_and_short() -> None:
    ops = Endpoint(name="ops", url="https://ops.example/hooks", secret="s" * 16)
    forged = {"type": "x\x1b]0;owned\x07" + "y" * 5000, "tenant": None, "data": {}}
    with pytest.raises(DeliveryRefusedError) as info:
        check_delivery(ops, forged, job_tenant=None)
    assert info.value.check == "event type"
    message = str(info.value)
    assert len(message) < 250
    assert "\x1b" not in message
    assert "\\x1b]0;owned\\x07" in message
    assert message.endswith("yyy... is not an event type of the catalogue")


async def test_operator_deliveries_are_invisible_to_tenants(
    make_engine: Callable[..., Engine], receiver_factory: Callable[..., Receiver]
) -> None:
    # The operator's receiver is down: its delivery is dead-lettered (max_retries=0), which a
    # tenant could otherwise purge or replay, silencing the operator's alert.
    down = receiver_factory("fail", fail_times=1000)
    acme = receiver_factory()
    kinds = ["dispatch.job.enqueued"]
    engine = make_engine(
        fast_relay(
            [
                endpoint("ops", down, events=kinds),
                endpoint("acme-hooks", acme, events=kinds, tenant="A"),
            ],
            max_retries=0,
        )
    )

    @engine.job(name="app.noop")
    async def noop() -> None: ...

    async with admin(engine) as call:
        response = await call("POST", "/jobs", ACME, json={"name": "app.noop"})
        assert response.status_code == 201, response.text
        await settle(engine)
        by_endpoint = {d.payload["endpoint"]: d for d in await deliveries(engine)}
        ops, mine = by_endpoint["ops"], by_endpoint["acme-hooks"]
        assert (ops.tenant, ops.state) == (None, JobState.FAILED)
        assert (mine.tenant, mine.state) == ("A", JobState.COMPLETED)
        [dead] = await engine.alist_dlq(name=DELIVER_JOB)
        assert dead.job_id == ops.id

        # lists and counts: the tenant's own delivery only
        listed = (await call("GET", "/jobs", ACME, params={"name": DELIVER_JOB})).json()
        assert [j["id"] for j in listed["items"]] == [mine.id]
        assert (await call("GET", "/dlq", ACME)).json()["items"] == []
        assert (await call("GET", "/dlq/count", ACME)).json() == {"count": 0}
        counts = (await call("GET", "/jobs/counts", ACME)).json()
        assert counts["failed"] == 0
        # by id: the answer an unknown id gets, and nothing changes
        for method, path in [
            ("GET", f"/jobs/{ops.id}"),
            ("POST", f"/jobs/{ops.id}/cancel"),
            ("POST", f"/jobs/{ops.id}/retry"),
            ("GET", f"/dlq/{dead.id}"),
            ("POST", f"/dlq/{dead.id}/replay"),
        ]:
            response = await call(method, path, ACME)
            assert response.status_code == 404, (method, path, response.text)
        bulk = (await call("POST", "/dlq/replay", ACME, json={"ids": [dead.id]})).json()
        assert bulk["replayed"] == []
        soon = format_datetime(utcnow() + timedelta(minutes=1))
        purged = (await call("POST", "/dlq/purge", ACME, json={"before": soon})).json()
        assert purged["purged"] == 0
        # still there, unreplayed, and the operator sees it
        entry = await engine.aget_dlq(dead.id)
        assert entry.replayed_at is None
        assert (await engine.aget_job(ops.id)).state is JobState.FAILED
        assert len(await deliveries(engine)) == 2
        response = await call("GET", f"/dlq/{dead.id}", OPS)
        assert response.status_code == 200, response.text
    assert acme.events[0]["tenant"] == "A"
