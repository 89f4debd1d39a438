"""Fixtures for the admin API tests: an engine with jobs and workflows, tokens for an operator
and two tenants, the app mounted at ``/dispatch`` as a host app would, an async client, and
``world``: real jobs, dead letters, runs and events of two tenants."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import attrs
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from dispatch_core import Engine, Workflow, tenant_scope
from dispatch_plugins.admin.app import admin_app
from dispatch_plugins.admin.auth import Token

OPS = "ops-secret-0123456789"
SECRET_A = "tenant-a-secret-0123"
SECRET_B = "tenant-b-secret-0123"
READER = "reader-secret-012345"

TOKENS = [
    Token(name="ops", secret=OPS, scopes=frozenset({"admin"})),
    Token(name="acme", secret=SECRET_A, scopes=frozenset({"admin"}), tenant="A"),
    Token(name="bravo", secret=SECRET_B, scopes=frozenset({"admin"}), tenant="B"),
    Token(name="reader", secret=READER, scopes=frozenset({"read"})),
]


def build_engine(url: str) -> Engine:
    """An engine with the jobs and workflows the tests use."""
    engine = Engine(url)

    @engine.job(name="send", max_retries=0)
    async def send(n: int) -> int:
        return n

    @engine.job(name="boom", max_retries=0)
    async def boom() -> None:
        raise RuntimeError("boom")

    @engine.job(name="noop")
    async def noop() -> None:
        return None

    @engine.workflow(name="order")
    async def order(wf: Workflow, amount: int) -> dict[str, int]:
        charged = await wf.step("charge", lambda: amount * 2)
        return {"charged": charged}

    @engine.workflow(name="approval")
    async def approval(wf: Workflow) -> Any:
        return await wf.wait_for_event("approved", timeout=3600)

    return engine


@pytest.fixture
def store_kind() -> str:
    """The store the engine uses; a module parametrises it to run on SQLite too."""
    return "memory"


@pytest.fixture
async def engine(store_kind: str, tmp_path: pathlib.Path) -> AsyncIterator[Engine]:
    """A fresh engine on the chosen store."""
    if store_kind == "sqlite":
        pytest.importorskip("dispatch_plugins.sqlite")
        url = "sqlite:///" + str(tmp_path / "x.db")
    else:
        url = "memory://"
    engine = build_engine(url)
    yield engine
    await engine.aclose()
    engine.close()


def host_app(engine: Engine, tokens: list[Token] | None = TOKENS, **options: Any) -> Starlette:
    """A host application mounting the admin app at ``/dispatch``."""
    return Starlette(routes=[Mount("/dispatch", app=admin_app(engine, tokens=tokens, **options))])


class Api:
    """A client for the mounted API: ``await api.get("/jobs", token=api.A)``; the default
    token is the operator's (scope ``admin``)."""

    OPS = OPS
    A = SECRET_A
    B = SECRET_B
    READER = READER
    #: The secret of each tenant's token.
    SECRETS: ClassVar[dict[str, str]] = {"A": SECRET_A, "B": SECRET_B}

    def __init__(self, client: httpx.AsyncClient, engine: Engine) -> None:
        self.client = client
        self.engine = engine

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = OPS,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        if content is not None:
            return await self.client.request(
                method, "/dispatch/v1" + path, headers=headers, params=params, content=content
            )
        return await self.client.request(
            method, "/dispatch/v1" + path, headers=headers, params=params, json=json
        )

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("POST", path, **kw)

    async def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        """Call, check the status, return the JSON body."""
        response = await self.request(method, path, **kw)
        assert response.status_code == status, response.text
        return response.json()

    async def wait_until(self, predicate: Callable[[], Awaitable[bool]]) -> None:
        """Poll ``predicate`` until it holds (a worker registered...); give up after 30 s."""
        deadline = time.monotonic() + 30
        while not await predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"gave up waiting for {predicate}")
            await asyncio.sleep(0.01)

    @staticmethod
    def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
        """Check an error response's status, body shape and code; return the error object."""
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert set(body) == {"error"}
        error: dict[str, Any] = body["error"]
        assert set(error) == {"code", "message", "details"}
        assert error["code"] == code, error
        assert isinstance(error["message"], str)
        assert error["message"]
        return error


@contextlib.asynccontextmanager
async def open_api(
    engine: Engine, *, raise_app_exceptions: bool = True, **options: Any
) -> AsyncIterator[Api]:
    """An :class:`Api` on a fresh app (``options`` go to :func:`host_app`)."""
    transport = httpx.ASGITransport(
        app=host_app(engine, **options), raise_app_exceptions=raise_app_exceptions
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Api(client, engine)


@pytest.fixture
async def api(engine: Engine) -> AsyncIterator[Api]:
    """The API of ``engine``, with the test tokens."""
    async with open_api(engine) as api:
        yield api


@pytest.fixture
def make_api(engine: Engine) -> Callable[..., contextlib.AbstractAsyncContextManager[Api]]:
    """``async with make_api(tokens=[...]) as api``: the API with other options (``on=`` another
    engine)."""

    def make(*, on: Engine | None = None, **options: Any) -> Any:
        return open_api(on or engine, **options)

    return make


@attrs.define
class TenantData:
    """One tenant's objects, made through the engine."""

    pending_job: str = ""  # pending (scheduled an hour ahead): cancellable
    failed_job: str = ""  # failed, dead-lettered: retryable
    dlq_entry: str = ""
    run: str = ""  # a completed run with one step ("charge")
    waiting_run: str = ""  # a run waiting for the event "approved"


@attrs.define
class World:
    """Two tenants' data: ``world["A"]``, ``world["B"]``."""

    tenants: dict[str, TenantData] = attrs.Factory(dict)

    def __getitem__(self, tenant: str) -> TenantData:
        return self.tenants[tenant]


async def populate(engine: Engine, tenants: tuple[str, ...] = ("A", "B")) -> World:
    """Give each tenant a pending job, a dead-lettered one, a finished run and a waiting run
    (correlation key ``shared``), all made for real by the engine and a draining worker."""
    world = World()
    for tenant in tenants:
        data = TenantData()
        with tenant_scope(tenant):
            data.failed_job = (await engine.aenqueue("boom")).id
        order = engine.workflows["order"]
        approval = engine.workflows["approval"]
        data.run = (await order.astart(21, tenant=tenant)).id
        data.waiting_run = (await approval.astart(tenant=tenant, correlation_key="shared")).id
        world.tenants[tenant] = data
    await engine.drain()
    for tenant, data in world.tenants.items():
        with tenant_scope(tenant):
            data.pending_job = (await engine.aenqueue("send", 1, delay=3600)).id
        [entry] = await engine.alist_dlq(tenant=tenant)
        data.dlq_entry = entry.id
    return world


@pytest.fixture
async def world(engine: Engine) -> World:
    """Jobs, dead letters and runs of tenants A and B."""
    return await populate(engine)
