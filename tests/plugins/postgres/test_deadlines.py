"""The deadlines of the store's calls: one timer for all the calls of a store, which still
drops exactly the connections whose call waited too long."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import psycopg
import pytest

from dispatch_core.errors import StoreUnavailableError
from dispatch_core.models import utcnow
from dispatch_core.testing import make_new_job
from dispatch_plugins.postgres import PostgresStore
from dispatch_plugins.postgres.connection import AsyncWatchdog

from .conftest import with_params


class _FakeConn:
    """What :func:`~dispatch_plugins.postgres.connection.sever` needs of a connection: its
    socket (one end of a socket pair, whose other end shows whether it was shut down)."""

    def __init__(self) -> None:
        self.ours, self.peer = socket.socketpair()
        self.pgconn = SimpleNamespace(socket=self.ours.fileno())

    def severed(self) -> bool:
        self.peer.setblocking(False)
        try:
            return self.peer.recv(1) == b""  # end of file: our end was shut down
        except BlockingIOError:
            return False

    def close(self) -> None:
        self.ours.close()
        self.peer.close()


@pytest.fixture
def conns() -> Iterator[list[_FakeConn]]:
    made = [_FakeConn() for _ in range(3)]
    yield made
    for conn in made:
        conn.close()


async def _until(check: Any, what: str) -> None:
    for _ in range(1000):  # 10 s at most; only a safety net
        if check():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"{what}: not after 10 s")


async def test_the_watchdog_severs_only_the_calls_past_their_deadline(
    conns: list[_FakeConn],
) -> None:
    watchdog = AsyncWatchdog(asyncio.get_running_loop())
    slow, busy, done = (watchdog.guard(cast(Any, conn), 30) for conn in conns)
    busy.kick()  # due in 30 s: the timer is set for then
    slow.kick(0.05)  # due first: the timer must come forward for it
    done.kick(0.05)
    done.stop()  # the call ended in time
    await _until(lambda: slow.expired, "the slow call's deadline")
    assert conns[0].severed()
    assert not busy.expired
    assert not conns[1].severed()
    assert not done.expired
    assert not conns[2].severed()
    # The timer went on for the call still running, and fires for it when it is due.
    busy.kick(0.05)
    await _until(lambda: busy.expired, "the busy call's deadline")
    assert conns[1].severed()
    watchdog.close()


async def test_a_kick_after_expiry_or_of_zero_sets_no_deadline(conns: list[_FakeConn]) -> None:
    watchdog = AsyncWatchdog(asyncio.get_running_loop())
    unbounded = watchdog.guard(cast(Any, conns[0]), 0)  # call_timeout=0: no limit
    stopped = watchdog.guard(cast(Any, conns[1]), 30)
    unbounded.kick()
    stopped.kick(0.05)
    stopped.kick(0)  # an unbounded step: the clock stops
    canary = watchdog.guard(cast(Any, conns[2]), 30)
    canary.kick(0.1)
    await _until(lambda: canary.expired, "the canary's deadline")
    assert not unbounded.expired
    assert not stopped.expired
    assert not conns[0].severed()
    assert not conns[1].severed()
    watchdog.close()


async def test_store_calls_share_one_timer(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timer per call (a ``call_at`` and a ``cancel`` on the event loop each) was much of
    what the deadlines cost on the hot path; the store's calls share one."""
    await store.enqueue([make_new_job() for _ in range(40)])
    loop = asyncio.get_running_loop()
    real_call_at = loop.call_at
    timers = 0

    def call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        nonlocal timers
        # The store's deadline timers only (psycopg sets one of its own for each wait).
        if getattr(callback, "__module__", None) == "dispatch_plugins.postgres.connection":
            timers += 1
        return real_call_at(when, callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", call_at)
    for _ in range(4):
        claimed = await store.claim(
            worker_id="w", queues=None, names=None, limit=10, lease_seconds=30, now=utcnow()
        )
        leases = {job.id: job.attempt_token or "" for job in claimed}
        await store.heartbeat(worker_id="w", leases=leases, lease_seconds=30, now=utcnow())
        await store.enqueue([make_new_job()])
    monkeypatch.undo()
    assert timers <= 1, f"{timers} timers set for 12 store calls"


async def test_a_hung_call_is_dropped_while_the_others_go_on(pg_dsn: str, schema: str) -> None:
    """One call waits on a row lock longer than call_timeout (the server's own timeouts are
    off); the calls beside it, on other connections, succeed, and only its connection is
    dropped."""
    store = PostgresStore(
        with_params(
            pg_dsn, schema=schema, statement_timeout="0", lock_timeout="0", call_timeout="0.5"
        )
    )
    await store.open()
    await store.migrate()
    try:
        (job,) = await store.enqueue([make_new_job()])
        async with await psycopg.AsyncConnection.connect(pg_dsn) as other:
            await other.execute(
                f'SELECT 1 FROM "{schema}".jobs WHERE id = %s FOR UPDATE', (job.id,)
            )
            hung = asyncio.create_task(store.cancel(job.id, now=utcnow()))
            calls = 0
            while not hung.done() and calls < 1000:  # beside it, until it is dropped
                await store.enqueue([make_new_job()])
                await store.count_jobs()
                calls += 1
            assert calls > 1
            with pytest.raises(StoreUnavailableError, match=r"no answer within 0.5s"):
                await asyncio.wait_for(hung, 30)
        assert (await store.get_job(job.id)).id == job.id  # and the store goes on
    finally:
        await store.close()
