"""Sync producers (hooks on the engine's private loop), and the entry point that builds a
relay from ``DISPATCH_WEBHOOKS_CONFIG``."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dispatch_core import Engine, Job, JobState
from dispatch_plugins.webhooks import (
    CONFIG_ENV,
    DELIVER_JOB,
    Relay,
    RelayConfigError,
    plugin as entry_point,
)

sys.path.insert(0, str(Path(__file__).parent))

from _relay_helpers import SECRET, Receiver, endpoint, fast_relay, settle


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_sync_producer_gets_its_events_delivered(
    receiver: Receiver, tmp_path: Path, store: str
) -> None:
    relay = fast_relay([endpoint("ops", receiver, events=["dispatch.job.enqueued"])])
    if store == "sqlite":
        pytest.importorskip("dispatch_plugins.sqlite")
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        url = "memory://"
    engine = Engine(url, plugins=[relay])

    @engine.job(name="app.noop")
    async def noop() -> None: ...

    enqueued: list[Job] = []
    engine.hooks.add_listener(
        lambda name, kwargs: (
            enqueued.append(kwargs["job"]) if name == "dispatch_job_enqueued" else None
        )
    )
    try:
        # plain sync code, no event loop: the enqueued hook runs on the engine's private
        # loop thread, and the relay enqueues the delivery through the blocking API
        job = noop.enqueue()
        wait_for(lambda: any(j.name == DELIVER_JOB for j in enqueued), "the delivery job")
        [delivery] = [j for j in enqueued if j.name == DELIVER_JOB]
        assert delivery.payload["event"]["data"]["job_id"] == job.id
        assert delivery.tenant is None

        async def work() -> list[Job]:
            await engine.drain(queues=["webhooks"], timeout=20)
            done = await engine.alist_jobs(name=DELIVER_JOB)
            await engine.aclose()
            return done

        [done] = asyncio.run(work())
        assert done.state is JobState.COMPLETED
        assert [e["data"]["job_id"] for e in receiver.events] == [job.id]
        assert receiver.requests[0].verified == "ok"
    finally:
        engine.close()


async def test_a_sync_producer_thread_beside_a_running_worker(
    receiver: Receiver, tmp_path: Path
) -> None:
    """A web app's sync view enqueues while a worker runs on the app's loop: the relay must
    not open the store on the engine's private hook loop under the running worker."""
    pytest.importorskip("dispatch_plugins.sqlite")
    relay = fast_relay([endpoint("ops", receiver, events=["dispatch.job.completed"])])
    engine = Engine(f"sqlite:///{tmp_path / 'jobs.db'}", plugins=[relay])

    @engine.job(name="app.noop")
    async def noop() -> None: ...

    worker = engine.worker(lead=False, poll_interval=0.05)
    running = asyncio.create_task(worker.run())
    try:
        jobs = [await asyncio.to_thread(noop.enqueue) for _ in range(3)]
        await asyncio.to_thread(wait_for, lambda: len(receiver.requests) >= 3, "deliveries")
        assert sorted(e["data"]["job_id"] for e in receiver.events) == sorted(j.id for j in jobs)
    finally:
        worker.stop(grace=1)
        await running
        await engine.aclose()
        engine.close()
    assert running.result().completed == 6  # three jobs, three deliveries


def write_config(tmp_path: Path, receiver: Receiver, **extra: object) -> Path:
    config = {
        "queue": "webhooks",
        "max_retries": 1,
        "timeout": 2,
        "endpoints": [
            {
                "name": "ops",
                "url": receiver.url,
                "secret_env": "OPS_WEBHOOK_SECRET",
                "events": ["dispatch.job.completed"],
                "allow_private": True,
                **extra,
            }
        ],
    }
    path = tmp_path / "relay.json"
    path.write_text(json.dumps(config))
    return path


async def test_the_entry_point_builds_a_relay_from_the_config_file(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPS_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv(CONFIG_ENV, str(write_config(tmp_path, receiver)))
    engine = Engine("memory://")
    try:
        definition = engine.get_definition(DELIVER_JOB)
        assert definition.queue == "webhooks"
        assert definition.max_retries == 1
        [relay] = [p for p in engine.pm.get_plugins() if isinstance(p, Relay)]
        assert SECRET not in repr(relay)

        @engine.job(name="app.add")
        async def add(n: int) -> int:
            return n + 1

        job = await add.aenqueue(1)
        await settle(engine)
        assert [e["data"]["job_id"] for e in receiver.events] == [job.id]
        assert receiver.requests[0].verified == "ok"  # signed with the secret from the env
    finally:
        await engine.aclose()


async def test_an_explicit_relay_wins_over_the_config_file(
    receiver_factory: Callable[..., Receiver], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_file = receiver_factory()
    explicit = receiver_factory()
    monkeypatch.setenv("OPS_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv(CONFIG_ENV, str(write_config(tmp_path, from_file)))
    relay = fast_relay([endpoint("explicit", explicit, events=["dispatch.job.completed"])])
    engine = Engine("memory://", plugins=[relay])
    try:
        assert [p for p in engine.pm.get_plugins() if isinstance(p, Relay)] == [relay]
        assert engine.get_definition(DELIVER_JOB).queue == "webhooks"

        @engine.job(name="app.noop")
        async def noop() -> None: ...

        await noop.aenqueue()
        await settle(engine)
        assert explicit.types() == ["dispatch.job.completed"]  # once, not twice
        assert from_file.requests == []
        [delivery] = await engine.alist_jobs(name=DELIVER_JOB)
        assert delivery.state is JobState.COMPLETED
    finally:
        await engine.aclose()


def test_without_the_variable_the_entry_point_does_nothing() -> None:
    engine = Engine("memory://")
    assert DELIVER_JOB not in engine.jobs
    assert not any(isinstance(p, Relay) for p in engine.pm.get_plugins())
    module = engine.pm.get_plugin("webhooks")
    assert module is entry_point
    hooks = [caller.name for caller in engine.pm.get_hookcallers(module) or []]
    assert hooks == ["dispatch_register_jobs"]  # no lifecycle hook: events cost nothing


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "relay.json'?: No such file"),
        ("{not json", "invalid JSON"),
        ('{"endpoints": {}}', "expected a list of endpoints"),
        (
            '[{"name": "ops", "url": "https://h.example/", "secret_env": "MISSING_VAR"}]',
            "endpoint 'ops': secret_env: environment variable 'MISSING_VAR' is not set",
        ),
        (
            '[{"name": "ops", "url": "gopher://h.example/", "secret": "0123456789abcdef"}]',
            "endpoint 'ops': url: scheme must be http or https",
        ),
        (
            '[{"name": "ops", "url": "https://h.example/", "secret": "0123456789abcdef", '
            '"colour": "red"}]',
            r"endpoint 'ops': unknown fields \['colour'\]",
        ),
        ('{"endpoints": [], "retries": 3}', r"unknown fields \['retries'\]"),
    ],
)
def test_a_bad_config_file_fails_the_engine_with_a_clear_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    content: str | None,
    message: str,
) -> None:
    path = tmp_path / "relay.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv(CONFIG_ENV, str(path))
    with pytest.raises(RelayConfigError, match=message):
        Engine("memory://")
