"""The keyspace upgrade from version 1 (dead-letter indexes in the entries' namespace, no
per-queue and per-tenant finished indexes) to version 2, in bounded steps."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import redis

from dispatch_core._ids import new_id
from dispatch_core.models import DLQFilter, Outcome, OutcomeKind, utcnow
from dispatch_core.testing import make_new_job
from dispatch_plugins.redis import RedisStore, store as store_module

from .conftest import REDIS_URL


async def _fill(store: RedisStore) -> None:
    """Finished jobs of two tenants and none in two queues (completed, failed and dead-lettered,
    cancelled), some entries replayed."""
    news = [
        make_new_job(f"n{i % 2}", queue=f"q{i % 3}", tenant=[None, "a", "b"][i % 3], max_attempts=1)
        for i in range(30)
    ]
    await store.enqueue(news)
    claimed = await store.claim(
        worker_id="wkr_m", queues=None, names=None, limit=100, lease_seconds=60, now=utcnow()
    )
    base = utcnow() - timedelta(minutes=30)
    for i, job in enumerate(claimed):
        at = base + timedelta(seconds=37 * i)
        if i % 5 == 4:
            await store.cancel(job.id, now=at)
            continue
        kind = OutcomeKind.FAIL if i % 2 else OutcomeKind.COMPLETED
        outcome = Outcome(
            job_id=job.id, attempt_token=job.attempt_token or "", kind=kind, error="e"
        )
        assert await store.finish([outcome], now=at) == [True]
    for entry in (await store.list_dlq(DLQFilter()))[::3]:
        await store.replay_dlq(entry.id, new_job_id=new_id("job"), now=utcnow())


async def _snapshot(store: RedisStore) -> dict[str, Any]:
    since = utcnow() - timedelta(hours=1)
    out: dict[str, Any] = {}
    for queue in (None, "q0", "q1", "q2"):
        for tenant in (None, "a", "b"):
            key = f"{queue}/{tenant}"
            out["jobs " + key] = await store.count_jobs(queue=queue, tenant=tenant)
            out["tp " + key] = await store.throughput(
                since=since, bucket_seconds=60, queue=queue, tenant=tenant
            )
            for replayed in (None, True, False):
                out[f"dlq {key} {replayed}"] = [
                    e.id
                    for e in await store.list_dlq(
                        DLQFilter(queue=queue, tenant=tenant, replayed=replayed, limit=1000)
                    )
                ]
                out[f"ndlq {key} {replayed}"] = await store.count_dlq(
                    queue=queue, tenant=tenant, replayed=replayed
                )
    return out


def _to_version_1(prefix: str, *, stamp: bool) -> None:
    """Rewrite the keyspace as version 1 wrote it, and leave in its indexes an entry whose
    hash is gone (a version-1 quirk the upgrade must clear)."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        p = prefix + ":"
        for key in list(client.scan_iter(match=p + "*", count=1000)):
            name = key[len(p) :]
            if name == "dlqs" or name.startswith("dlqs:"):
                client.rename(key, p + "dlq" + name[4:])
            elif name.startswith(("donef:", "donex:", "tdonec:", "tdonef:", "tdonex:")):
                client.delete(key)
        ghost = new_id("dlq")
        for index in ("dlq", "dlq:q:q9", "dlq:n:n9", "dlq:t:ghost", "dlq:rp"):
            client.zadd(p + index, {ghost: 0})
        client.zadd(p + "dlq:failed", {ghost: 1})
        if stamp:
            client.set(p + "schema", "1")
        else:
            client.delete(p + "schema")
    finally:
        client.close()


def _keys(prefix: str) -> set[str]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        return {k[len(prefix) + 1 :] for k in client.scan_iter(match=prefix + ":*", count=1000)}
    finally:
        client.close()


@pytest.mark.parametrize("stamp", [True, False], ids=["stamped", "never migrated"])
async def test_a_version_1_keyspace_is_upgraded_in_steps(
    store: RedisStore, prefix: str, monkeypatch: pytest.MonkeyPatch, stamp: bool
) -> None:
    await _fill(store)
    want = await _snapshot(store)
    _to_version_1(prefix, stamp=stamp)
    monkeypatch.setattr(store_module, "MIGRATE_CHUNK", 2)
    steps: list[str] = []
    real = store._call

    async def counted(name: str, *args: Any) -> Any:
        steps.append(name)
        return await real(name, *args)

    monkeypatch.setattr(store, "_call", counted)
    assert await store.migrate() == ["0002_disjoint_indexes"]
    assert steps.count("migrate_dlq") > 5
    assert steps.count("migrate_done") > 5
    keys = _keys(prefix)
    assert not any(k == "dlq" or k.startswith(("dlq:q:", "dlq:t:", "dlq:n:")) for k in keys)
    assert "dlq:rp" not in keys
    assert "dlq:failed" not in keys
    assert await _snapshot(store) == want
    assert await store.migrate() == []
    redis_client = redis.Redis.from_url(REDIS_URL)
    try:
        assert redis_client.get(f"{prefix}:schema") == b"2"
    finally:
        redis_client.close()


async def test_an_interrupted_upgrade_is_run_again(
    store: RedisStore, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _fill(store)
    want = await _snapshot(store)
    _to_version_1(prefix, stamp=True)
    monkeypatch.setattr(store_module, "MIGRATE_CHUNK", 3)
    real = store._call
    calls = 0

    async def failing(name: str, *args: Any) -> Any:
        nonlocal calls
        if name == "migrate_done":
            calls += 1
            if calls == 4:
                raise ConnectionError("lost")
        return await real(name, *args)

    monkeypatch.setattr(store, "_call", failing)
    with pytest.raises(ConnectionError):
        await store.migrate()
    monkeypatch.setattr(store, "_call", real)
    assert await store.migrate() == ["0002_disjoint_indexes"]
    assert await _snapshot(store) == want
