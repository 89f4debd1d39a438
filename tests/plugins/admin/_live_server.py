"""A real HTTP server for the client and remote CLI tests: ``dispatch serve``'s app on uvicorn,
in a thread, on a free port of 127.0.0.1, over a SQLite engine with real jobs, dead letters,
cron entries, queues, workers and workflow runs of two tenants.

The test modules put this directory on ``sys.path`` and import it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import uvicorn

from dispatch_core import Engine, WorkerInfo, WorkerState, Workflow, tenant_scope
from dispatch_core._ids import new_id
from dispatch_core.models import utcnow
from dispatch_plugins.admin.auth import Token
from dispatch_plugins.admin.serve import build_app

OPS = "ops-token-0123456789abcdef"
READER = "reader-token-0123456789ab"
ACME = "acme-token-0123456789abcd"
TOKENS = [
    Token(name="ops", secret=OPS, scopes=frozenset({"admin"})),
    Token(name="reader", secret=READER, scopes=frozenset({"read"})),
    Token(name="acme", secret=ACME, scopes=frozenset({"admin"}), tenant="acme"),
]
#: Upper bound for a server to start or stop: a failsafe, not a measurement.
_DEADLINE = 30.0


def build_engine(url: str) -> Engine:
    """The application: jobs, a failing job, a cron entry, a limited queue, two workflows."""
    engine = Engine(url, load_entrypoints=True)
    engine.queue("images", concurrency=4)

    @engine.job(name="app.add", queue="default")
    def add(x: int) -> int:
        return x + 1

    @engine.job(name="app.boom", queue="errors", max_retries=0)
    def boom(x: int) -> None:
        raise ValueError(f"boom {x}\nsecond line")

    @engine.job(name="app.thumb", queue="images")
    def thumb(path: str) -> int:
        return len(path)

    engine.schedule("nightly-report", "0 3 * * *", add, 1)
    engine.schedule("hourly-thumbs", "0 * * * *", thumb, "a.png")

    @engine.workflow(name="app.order")
    async def order(wf: Workflow, order_id: int) -> Any:
        reservation = await wf.step("reserve", lambda: f"res-{order_id}")
        paid = await wf.wait_for_event("paid")
        return {"reservation": reservation, "paid": paid}

    return engine


@attrs.define
class Data:
    """Ids of what :func:`populate` made."""

    pending: list[str] = attrs.Factory(list)  # scheduled an hour ahead: cancellable
    failed: list[str] = attrs.Factory(list)  # dead-lettered: retryable
    acme_jobs: list[str] = attrs.Factory(list)
    runs: list[str] = attrs.Factory(list)  # waiting for "paid"


async def populate(engine: Engine, *, failures: int = 3) -> Data:
    """Real jobs of two tenants (and none), ``failures`` dead letters, runs waiting for an
    event, cron entries and queue limits written by a worker that then stopped."""
    data = Data()
    for i in range(failures):
        data.failed.append((await engine.aenqueue("app.boom", i)).id)
    await engine.aenqueue("app.add", 1)
    await engine.aenqueue("app.thumb", "b.png")
    with tenant_scope("acme"):
        data.acme_jobs.append((await engine.aenqueue("app.add", 2)).id)
    with tenant_scope("globex"):
        await engine.aenqueue("app.add", 3)
    for order_id in (1, 2):
        data.runs.append((await engine.workflows["app.order"].astart(order_id)).id)
    await engine.worker(concurrency=4).drain(timeout=None)
    for i in range(2):
        data.pending.append((await engine.aenqueue("app.add", 10 + i, delay=3600)).id)
    with tenant_scope("acme"):
        data.acme_jobs.append((await engine.aenqueue("app.add", 20, delay=3600)).id)
    await engine.apause_queue("images")
    await _register_workers(engine)
    return data


async def _register_workers(engine: Engine) -> None:
    """A leader, a dead worker and a stopped one, as their processes would have left them."""
    now = utcnow()
    rows = [
        (WorkerState.RUNNING, "web-1.example.com", ("default", "errors")),
        (WorkerState.DEAD, "web-2", None),
        (WorkerState.STOPPED, "web-3", ("images",)),
    ]
    for n, (state, host, queues) in enumerate(rows):
        row = WorkerInfo(
            id=new_id("wkr"),
            hostname=host,
            pid=100 + n,
            queues=queues,
            concurrency=4,
            version="0.1.0",
            started_at=now - timedelta(hours=3 - n),
            last_seen=now if state is WorkerState.RUNNING else now - timedelta(minutes=5),
            state=state,
        )
        await engine.store.register_worker(row)
        if n == 0:
            # A lease long enough to outlast the test.
            assert await engine.store.acquire_leadership(worker_id=row.id, ttl=3600, now=now)


class LiveServer:
    """``build_app(engine, ...)`` served by uvicorn in a thread on a free port."""

    def __init__(self, engine: Engine, tokens: list[Token] | None = None) -> None:
        app = build_app(engine, tokens=TOKENS if tokens is None else tokens)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="live-server", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        """Where the admin app is mounted."""
        return f"http://127.0.0.1:{self.port}/dispatch"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + _DEADLINE
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the live server did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(_DEADLINE)


@contextmanager
def serving(tmp_path: Path, *, failures: int = 3) -> Iterator[tuple[LiveServer, Data, str]]:
    """A populated SQLite store in ``tmp_path`` served over HTTP: the server, what was made,
    and the store URL (for the same commands run on the store directly)."""
    store_url = f"sqlite:///{tmp_path / 'dispatch.db'}"
    setup = build_engine(store_url)

    async def fill() -> Data:
        try:
            return await populate(setup, failures=failures)
        finally:
            await setup.aclose()

    data = asyncio.run(fill())
    live = LiveServer(build_engine(store_url))
    live.start()
    try:
        yield live, data, store_url
    finally:
        live.stop()
