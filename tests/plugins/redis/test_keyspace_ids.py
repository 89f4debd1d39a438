"""No id a caller supplies reaches an index or another kind's key (issue 16, finding 5).

Before keyspace version 2 the dead-letter indexes (``dlq:t:<tenant>``, ``dlq:q:<queue>``,
``dlq:n:<name>``, ``dlq:failed``...) shared the namespace of the entries (``dlq:<id>``):
``GET /v1/dlq/t:acme`` read a sorted set as a hash and answered 500, where an unknown tenant
answered 404, telling any tenant which tenants, queues and job names had dead letters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import attrs
import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.routing import Mount

from dispatch_core import Engine, tenant_scope
from dispatch_core._ids import new_id
from dispatch_core.cluster import WorkerInfo
from dispatch_core.cron import CronEntry
from dispatch_core.errors import (
    CronNotFoundError,
    DLQEntryNotFoundError,
    JobNotFoundError,
    RunNotFoundError,
)
from dispatch_core.models import DLQFilter, Outcome, OutcomeKind, utcnow
from dispatch_core.testing import make_new_job
from dispatch_core.workflows.models import (
    NewEvent,
    NewRun,
    RunState,
    StepKind,
    StepRecord,
    StepState,
)
from dispatch_plugins.admin.app import admin_app
from dispatch_plugins.admin.auth import Token
from dispatch_plugins.redis import RedisStore

from .conftest import REDIS_URL


@attrs.frozen(kw_only=True)
class Data:
    job_id: str
    dlq_id: str
    run_id: str
    cron: str
    worker_id: str


async def _populate(store: RedisStore) -> Data:
    """A dead letter of tenant ``acme`` (queue ``emails``, name ``x``; replayed, so every
    dead-letter index exists), a completed and a cancelled job, a run with a step and an
    event, a cron entry, a worker and a queue row."""
    now = utcnow()
    failing, done, cancelled = await store.enqueue(
        [
            make_new_job("x", queue="emails", tenant="acme", max_attempts=1),
            make_new_job("x", queue="emails", tenant="acme"),
            make_new_job("x", queue="emails", tenant="acme", run_at=now + timedelta(hours=1)),
        ]
    )
    now = utcnow()
    claimed = await store.claim(
        worker_id="wkr_a", queues=None, names=None, limit=10, lease_seconds=30, now=now
    )
    assert {j.id for j in claimed} == {failing.id, done.id}
    tokens = {j.id: j.attempt_token or "" for j in claimed}
    assert await store.finish(
        [
            Outcome(
                job_id=failing.id,
                attempt_token=tokens[failing.id],
                kind=OutcomeKind.FAIL,
                error="boom",
            ),
            Outcome(job_id=done.id, attempt_token=tokens[done.id], kind=OutcomeKind.COMPLETED),
        ],
        now=now,
    ) == [True, True]
    await store.cancel(cancelled.id, now=now)
    (entry,) = await store.list_dlq(DLQFilter())
    await store.replay_dlq(entry.id, new_job_id=new_id("job"), now=now)
    run = NewRun(
        id=new_id("wfrun"), name="wf", version=1, input=None, created_at=now, tenant="acme"
    )
    await store.create_run(run, make_new_job("wf.drive", tenant="acme"))
    await store.save_step(
        run.id,
        StepRecord(seq=0, name="a", kind=StepKind.STEP, state=StepState.COMPLETED, started_at=now),
        now=now,
    )
    await store.send_event(
        NewEvent(
            id=new_id("evt"), run_id=run.id, name="go", payload=1, created_at=now, tenant="acme"
        ),
        driver=make_new_job("wf.drive", tenant="acme"),
        now=now,
    )
    assert await store.take_event(run.id, "go", seq=1, now=now) is not None
    await store.upsert_cron(
        [
            CronEntry(
                name="nightly",
                expr="0 3 * * *",
                job_name="x",
                next_run_at=now,
                created_at=now,
                updated_at=now,
            )
        ],
        now=now,
    )
    worker = WorkerInfo(
        id=new_id("wkr"),
        hostname="h",
        pid=1,
        queues=("emails",),
        concurrency=1,
        version="0",
        started_at=now,
        last_seen=now,
    )
    await store.register_worker(worker)
    await store.pause_queue("emails", paused=False)
    return Data(
        job_id=failing.id, dlq_id=entry.id, run_id=run.id, cron="nightly", worker_id=worker.id
    )


def _hostile(data: Data) -> list[str]:
    """Ids that name index keys (version 1 and 2 layouts), other kinds' entities, globs, Redis
    Cluster hash tags, separators, nothing, and a lot."""
    ids = [
        "t:acme",
        "q:emails",
        "n:x",
        "s:completed",
        "s:failed",
        "failed",
        "rp",
        "dlq",
        "dlqs",
        "dlqs:t:acme",
        "s:t:acme",
        "jobs",
        "*",
        "?",
        "[a-z]*",
        "",
        ":",
        "::",
        " ",
        "{acme}",
        "{t:acme}",
        "a:{b}:c",
        "x" * 100_000,
        "dlq_" + "0" * 26,
        "dlq_" + "z" * 26,
    ]
    for real in (data.job_id, data.dlq_id, data.run_id, data.cron, data.worker_id):
        ids += (real, f"{real}:x", f"{{{real}}}", f"{real}*", f" {real}", real.upper())
    return ids


async def _expect(
    exc: type[Exception], call: Any, *, ok: frozenset[str] = frozenset(), ident: str
) -> None:
    if ident in ok:
        await call
        return
    with pytest.raises(exc) as info:
        await call
    assert type(info.value) is exc, f"{ident[:40]!r}: {info.value!r}"


async def test_no_id_reaches_an_index_or_another_kinds_key(store: RedisStore) -> None:
    data = await _populate(store)
    now = utcnow()
    step = StepRecord(
        seq=7, name="s", kind=StepKind.STEP, state=StepState.COMPLETED, started_at=now
    )
    for ident in _hostile(data):
        jobs_ok = frozenset({data.job_id})
        await _expect(JobNotFoundError, store.get_job(ident), ok=jobs_ok, ident=ident)
        if ident != data.job_id:
            await _expect(JobNotFoundError, store.cancel(ident, now=now), ident=ident)
            await _expect(JobNotFoundError, store.retry(ident, now=now), ident=ident)
        dlq_ok = frozenset({data.dlq_id})
        await _expect(DLQEntryNotFoundError, store.get_dlq(ident), ok=dlq_ok, ident=ident)
        if ident != data.dlq_id:
            await _expect(
                DLQEntryNotFoundError,
                store.replay_dlq(ident, new_job_id=new_id("job"), now=now),
                ident=ident,
            )
        if ident != data.run_id:
            await _expect(RunNotFoundError, store.get_run(ident), ident=ident)
            assert await store.list_steps(ident) == []
            assert await store.take_event(ident, "go", seq=0, now=now) is None
            await _expect(RunNotFoundError, store.save_step(ident, step, now=now), ident=ident)
            await _expect(
                RunNotFoundError,
                store.update_run(ident, state=RunState.FAILED, now=now),
                ident=ident,
            )
            await _expect(
                RunNotFoundError,
                store.set_run_version(ident, 2, generation=0, now=now),
                ident=ident,
            )
            event = NewEvent(
                id=new_id("evt"), run_id=ident, name="go", payload=1, created_at=now, tenant="acme"
            )
            await _expect(
                RunNotFoundError,
                store.send_event(event, driver=make_new_job("wf.drive"), now=now),
                ident=ident,
            )
        if ident != data.cron:
            await _expect(CronNotFoundError, store.get_cron(ident), ident=ident)
            await _expect(
                CronNotFoundError,
                store.set_cron_enabled(ident, enabled=False, next_run_at=now, now=now),
                ident=ident,
            )
            assert await store.delete_cron(ident) is False
            fired = await store.fire_cron(name=ident, tick=now, next_run_at=now, job=None, now=now)
            assert fired is None
        if ident != data.job_id:
            assert await store.heartbeat(
                worker_id="wkr_a", leases={ident: "tok"}, lease_seconds=30, now=now
            ) == {ident}
        if ident != data.worker_id:
            await store.deregister_worker(ident, now=now)
    # the blocking producer's lookups too
    sync = store.sync()
    for ident in _hostile(data):
        if ident != data.job_id:
            with pytest.raises(JobNotFoundError):
                sync.get_job(ident)
            with pytest.raises(JobNotFoundError):
                sync.cancel(ident)
    # and nothing was harmed
    assert (await store.get_dlq(data.dlq_id)).tenant == "acme"
    assert len(await store.list_dlq(DLQFilter(tenant="acme", queue="emails", name="x"))) == 1
    assert (await store.get_cron(data.cron)).enabled
    assert [w.id for w in await store.list_workers()] == [data.worker_id]


async def test_entities_and_indexes_live_in_disjoint_namespaces(
    store: RedisStore, prefix: str
) -> None:
    """Every key under a namespace that ids or names address holds that kind's hash."""
    await _populate(store)
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        types = {k[len(prefix) + 1 :]: str(client.type(k)) for k in keys}
    finally:
        client.close()
    entity_spaces = ("job:", "dlq:", "run:", "cron:", "worker:", "queue:", "steps:", "ev:", "evc:")
    seen = set()
    for key, kind in types.items():
        for space in entity_spaces:
            if key.startswith(space):
                seen.add(space)
                assert kind == "hash", f"{key} is a {kind}, in the namespace of {space}<id>"
    assert seen == set(entity_spaces), f"namespaces not exercised: {set(entity_spaces) - seen}"
    assert {"dlqs:t:acme", "dlqs:q:emails", "dlqs:n:x", "dlqs:rp", "dlqs:failed"} <= set(types)


# -- through the admin API ------------------------------------------------------------------------

OPS = "ops-secret-0123456789"
ACME = "tenant-acme-secret-01"
BRAVO = "tenant-bravo-secret-0"
TOKENS = [
    Token(name="ops", secret=OPS, scopes=frozenset({"admin"})),
    Token(name="acme", secret=ACME, scopes=frozenset({"admin"}), tenant="acme"),
    Token(name="bravo", secret=BRAVO, scopes=frozenset({"admin"}), tenant="bravo"),
]


@pytest.fixture
async def engine(redis_url: str) -> AsyncIterator[Engine]:
    engine = Engine(redis_url)

    @engine.job(name="boom", queue="emails", max_retries=0)
    async def boom() -> None:
        raise RuntimeError("boom")

    @engine.job(name="send", queue="emails")
    async def send() -> None:
        return None

    try:
        yield engine
    finally:
        await engine.aclose()


async def test_the_admin_api_answers_404_for_ids_that_name_indexes(engine: Engine) -> None:
    for tenant in ("acme", "bravo"):
        with tenant_scope(tenant):
            await engine.aenqueue("boom")
            await engine.aenqueue("send")
    await engine.drain()
    entries = await engine.alist_dlq()
    assert {e.tenant for e in entries} == {"acme", "bravo"}
    real = entries[0].id
    app = Starlette(routes=[Mount("/dispatch", app=admin_app(engine, tokens=TOKENS))])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    probes = [
        "t:acme",
        "t:bravo",
        "t:nobody",
        "q:emails",
        "q:nowhere",
        "n:boom",
        "n:nothing",
        "failed",
        "rp",
        "s:failed",
        "dlqs:t:acme",
        "*",
        "{acme}",
        "a:{b}:c",
        "x" * 10_000,
        f"{real}:x",
        f"{{{real}}}",
    ]
    paths = [
        ("GET", "/dlq/{}"),
        ("POST", "/dlq/{}/replay"),
        ("GET", "/jobs/{}"),
        ("POST", "/jobs/{}/cancel"),
        ("POST", "/jobs/{}/retry"),
        ("GET", "/runs/{}"),
        ("GET", "/runs/{}/timeline"),
    ]
    operator_paths = [
        ("GET", "/cron/{}"),
        ("POST", "/cron/{}/enable"),
        ("POST", "/cron/{}/disable"),
    ]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for secret, routes in ((BRAVO, paths), (ACME, paths), (OPS, paths + operator_paths)):
            for method, template in routes:
                for probe in probes:
                    url = "/dispatch/v1" + template.format(quote(probe, safe=""))
                    response = await client.request(
                        method, url, headers={"Authorization": f"Bearer {secret}"}
                    )
                    assert response.status_code == 404, (
                        f"{method} {url[:80]}: {response.status_code} {response.text[:200]}"
                    )
                    assert response.json()["error"]["code"] == "not_found"
        # a real entry of another tenant is not found either; the owner sees it
        owner = next(e.tenant for e in entries if e.id == real)
        other = BRAVO if owner == "acme" else ACME
        mine = ACME if owner == "acme" else BRAVO
        url = f"/dispatch/v1/dlq/{real}"
        assert (
            await client.get(url, headers={"Authorization": f"Bearer {other}"})
        ).status_code == 404
        assert (
            await client.get(url, headers={"Authorization": f"Bearer {mine}"})
        ).status_code == 200
