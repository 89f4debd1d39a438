"""A live Dispatch for the dashboard's browser tests.

An engine on SQLite with a few jobs, a workflow and a cron entry; the admin app served by a real
uvicorn server on a free 127.0.0.1 port and a real worker, both on one event loop in a
background thread. The tests drive headless Chromium against it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import attrs
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from dispatch_core import Engine, JobState, Workflow
from dispatch_core.worker import Worker
from dispatch_plugins.admin.app import admin_app
from dispatch_plugins.admin.auth import Token

__all__ = [
    "OPERATOR_SECRET",
    "TENANT_SECRET",
    "MOUNT",
    "MARKUP",
    "CHROMIUM_ARGS",
    "LiveDispatch",
    "build_engine",
    "seed",
    "Seeded",
    "wait_for",
]

T = TypeVar("T")

OPERATOR_SECRET = "operator-secret-for-tests-0001"
TENANT_SECRET = "acme-tenant-secret-for-tests-01"
#: A payload value the dashboard must show as text.
MARKUP = "<b>gift</b><img src=x onerror=alert(1)>"
#: Where the admin app is mounted, as `dispatch serve` does.
MOUNT = "/dispatch"
#: Debian's chromium in a container: no sandbox, no GPU, nothing phoning home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def build_engine(db: Path, flags: Path) -> Engine:
    """The engine under test. Jobs named ``*.flaky`` fail their first run (a flag file in
    ``flags`` remembers it) and succeed afterwards; ``legacy.ping`` always fails."""
    engine = Engine(f"sqlite:///{db}")
    engine.queue("emails", concurrency=4)

    @engine.job(name="shop.send_receipt", queue="emails")
    async def send_receipt(order: dict[str, Any]) -> dict[str, Any]:
        return {"sent": True, "order": order["id"]}

    def fail_once(key: str) -> str:
        flag = flags / key
        if not flag.exists():
            flag.touch()
            raise RuntimeError(f"inventory service unavailable for {key}")
        return f"synced {key}"

    @engine.job(name="shop.sync_inventory.flaky", max_retries=0)
    async def sync_inventory(key: str) -> str:
        return fail_once(key)

    @engine.job(name="shop.import_catalog.flaky", max_retries=0)
    async def import_catalog(key: str) -> str:
        return fail_once(key)

    @engine.job(name="images.resize.flaky", queue="images", max_retries=0)
    async def resize(key: str) -> str:
        return fail_once(key)

    @engine.job(name="archive.compact", queue="archive")
    async def compact(n: int) -> int:
        return n

    @engine.job(name="legacy.ping", queue="legacy", max_retries=0)
    async def ping(url: str) -> None:
        raise ConnectionError(f"{url} refused the connection")

    @engine.job(name="reports.render", queue="reports")
    async def render(report: str) -> str:
        return report

    @engine.job(name="billing.invoice")
    async def invoice(amount: int) -> int:
        return amount

    @engine.job(name="billing.refund")
    async def refund(amount: int) -> int:
        return amount

    @engine.cron("0 3 * * *", name="reports.nightly", queue="reports")
    async def nightly() -> str:
        return "nightly report"

    @engine.workflow(name="onboarding.welcome", queue="workflows")
    async def onboard(wf: Workflow, user: dict[str, Any]) -> dict[str, Any]:
        account = await wf.step("create-account", lambda: f"account for {user['email']}")
        await wf.sleep("cool-off", 0.2)
        sent = await wf.step("send-welcome-email", lambda: f"welcome sent to {user['email']}")
        return {"account": account, "email": sent}

    return engine


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``check`` until it holds (test setup, not an assertion); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class LiveDispatch:
    """The admin app (at ``/dispatch``) under uvicorn plus a worker, in a background thread."""

    def __init__(self, engine: Engine, tokens: list[Token]) -> None:
        self.engine = engine
        self.app = Starlette(routes=[Mount(MOUNT, app=admin_app(engine, tokens=tokens))])
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}{MOUNT}/"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="live-dispatch", daemon=True)
        self._server: uvicorn.Server | None = None
        self._worker: Worker | None = None
        self._error: BaseException | None = None
        #: What :func:`seed` created, for the tests to find.
        self.seeded: Seeded | None = None

    def start(self) -> None:
        self._thread.start()
        wait_for(
            lambda: self._error is not None or (self._server is not None and self._server.started),
            "the admin app to start",
        )
        if self._error is not None:
            raise RuntimeError("the live server failed to start") from self._error

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the server's loop (where the engine lives) and return its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def stop_worker(self) -> None:
        """Stop the worker (its row says ``stopped``); the server goes on serving."""

        async def stop() -> None:
            assert self._worker is not None
            self._worker.stop(grace=1.0)

        self.call(stop())

    def stop(self) -> None:
        """Stop the server; the worker then stops and the engine closes (see ``_main``)."""
        if self._server is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(setattr, self._server, "should_exit", True)
        self._thread.join(timeout=20)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # reported by start() or the tests' failures
            self._error = exc
        finally:
            self._loop.close()
            self._sock.close()

    async def _main(self) -> None:
        await self.engine.aopen()
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="on", ws="none", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._worker = self.engine.worker(
            concurrency=4, heartbeat_interval=0.5, rescue_interval=0.5, poll_interval=0.5
        )
        worker = asyncio.create_task(self._worker.run(), name="worker")
        try:
            await self._server.serve(sockets=[self._sock])
        finally:
            self._worker.stop(grace=1.0)
            await worker
            await self.engine.aclose()


@attrs.frozen(kw_only=True)
class Seeded:
    """What :func:`seed` created."""

    receipts: list[str]
    flaky_job: str  # failed once; retrying it succeeds
    catalog_job: str  # failed once; its dead letter's replay succeeds
    legacy_job: str  # always fails (queue "legacy")
    image_jobs: list[str]  # failed once each (queue "images"), for "replay all"
    archive_jobs: list[str]  # 60 jobs waiting in the paused queue "archive", for paging
    acme_job: str  # tenant "acme"
    globex_job: str  # tenant "globex"
    run_id: str
    leader: str


def seed(live: LiveDispatch) -> Seeded:
    """Fill the store through the engine and wait until the worker has settled everything."""
    engine = live.engine

    async def enqueue() -> Seeded:
        # The oldest jobs, so the newest page of the job list still shows the others.
        await engine.apause_queue("archive")
        archive = await engine.aenqueue_many("archive.compact", range(60))
        receipts = [
            (await engine.aenqueue("shop.send_receipt", {"id": i, "total": 10 * i})).id
            for i in range(1, 6)
        ]
        # Markup in data must show as text, never become elements.
        marked = {"id": 6, "total": 60, "note": MARKUP}
        receipts.append((await engine.aenqueue("shop.send_receipt", marked)).id)
        flaky = await engine.aenqueue("shop.sync_inventory.flaky", "sku-1")
        catalog = await engine.aenqueue("shop.import_catalog.flaky", "catalog-1")
        legacy = await engine.aenqueue("legacy.ping", "http://legacy.example")
        images = [(await engine.aenqueue("images.resize.flaky", f"img-{i}")).id for i in range(3)]
        await engine.apause_queue("reports")  # three jobs wait there: a queue depth to show
        for name in ("daily", "weekly", "monthly"):
            await engine.aenqueue("reports.render", name)
        acme = await engine.aenqueue("billing.invoice", 100, tenant="acme")
        globex = await engine.aenqueue("billing.refund", 200, tenant="globex")
        run = await engine.workflows["onboarding.welcome"].astart({"email": "ada@example.com"})
        return Seeded(
            receipts=receipts,
            flaky_job=flaky.id,
            catalog_job=catalog.id,
            legacy_job=legacy.id,
            image_jobs=images,
            archive_jobs=[j.id for j in archive],
            acme_job=acme.id,
            globex_job=globex.id,
            run_id=run.id,
            leader="",
        )

    seeded = live.call(enqueue())
    done = {
        *seeded.receipts,
        seeded.acme_job,
        seeded.globex_job,
    }
    failed = {seeded.flaky_job, seeded.catalog_job, seeded.legacy_job, *seeded.image_jobs}

    def settled() -> bool:
        async def check() -> bool:
            for job_id in done | failed:
                job = await engine.aget_job(job_id)
                want = JobState.COMPLETED if job_id in done else JobState.FAILED
                if job.state is not want:
                    return False
            run = await engine.aget_run(seeded.run_id)
            entries = await engine.acron_entries()
            return (
                run.state.value == "completed"
                and await engine.aleader() is not None
                and any(e.name == "reports.nightly" for e in entries)
            )

        return live.call(check())

    wait_for(settled, "the seeded jobs, run, cron entry and leader", timeout=60)
    leader = live.call(engine.aleader())
    assert leader is not None
    return attrs.evolve(seeded, leader=leader)
