"""``AdminClient``: the Engine's operator methods over a real admin API server, returning the
same objects as the Engine and raising the core's errors."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from dispatch_core import (
    CronNotFoundError,
    DLQEntryNotFoundError,
    Engine,
    InvalidTransitionError,
    JobNotFoundError,
    JobState,
    RunNotFoundError,
    StoreUnavailableError,
    WorkerInfo,
    WorkflowError,
    tenant_scope,
)
from dispatch_core._ids import new_id
from dispatch_core.models import RunnableCount, utcnow
from dispatch_core.operations import Operations
from dispatch_plugins.admin import plugin
from dispatch_plugins.admin.client import (
    AdminAPIError,
    AdminAuthError,
    AdminClient,
    AdminUnavailableError,
)

sys.path.insert(0, str(Path(__file__).parent))
import _live_server as live_server

Served = tuple[live_server.LiveServer, live_server.Data, str]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the tests that only read."""
    with live_server.serving(tmp_path_factory.mktemp("client")) as served:
        yield served


@pytest.fixture
def own(tmp_path: Path) -> Iterator[Served]:
    """A server and store of the test's own."""
    with live_server.serving(tmp_path, failures=8) as served:
        yield served


@pytest.fixture
async def engine(shared: Served) -> AsyncIterator[Engine]:
    """An engine on the shared server's store: what the client must agree with."""
    engine = live_server.build_engine(shared[2])
    yield engine
    await engine.aclose()


@pytest.fixture
async def client(shared: Served) -> AsyncIterator[AdminClient]:
    async with AdminClient(shared[0].url, live_server.OPS) as client:
        yield client


def mocked(handler: Callable[[httpx.Request], httpx.Response]) -> AdminClient:
    """A client whose requests ``handler`` answers (for answers no real server gives)."""
    return AdminClient(
        "http://admin.test/dispatch", "token", transport=httpx.MockTransport(handler)
    )


# -- the protocol ----------------------------------------------------------------------------------


def test_engine_and_client_are_operations() -> None:
    assert isinstance(Engine("memory://", load_entrypoints=False), Operations)
    assert isinstance(AdminClient("http://127.0.0.1:8000/dispatch"), Operations)


def test_the_plugin_hands_out_clients_for_http_urls_only() -> None:
    made = plugin.dispatch_remote_operations(url="https://ops.example.com/dispatch/", token="t")
    assert isinstance(made, AdminClient)
    assert made.url == "https://ops.example.com/dispatch"
    assert made.token == "t"
    assert plugin.dispatch_remote_operations(url="sqlite:///x.db", token=None) is None


def test_urls_are_checked_and_passwords_hidden() -> None:
    with pytest.raises(ValueError, match="not an http"):
        AdminClient("ftp://example.com/dispatch")
    client = AdminClient("https://user:pw@ops.example.com/dispatch")
    assert client.safe_url == "https://user:***@ops.example.com/dispatch"
    assert "pw" not in repr(client)


# -- reading: the same objects as the engine -------------------------------------------------------


async def test_jobs(client: AdminClient, engine: Engine, shared: Served) -> None:
    data = shared[1]
    assert await client.alist_jobs(limit=100) == await engine.alist_jobs(limit=100)
    for filters in (
        {"state": "failed"},
        {"state": JobState.PENDING, "queue": "default"},
        {"name": "app.add", "order": "asc"},
        {"tenant": "acme"},
    ):
        assert await client.alist_jobs(**filters) == await engine.alist_jobs(**filters), filters
    assert await client.aget_job(data.failed[0]) == await engine.aget_job(data.failed[0])
    assert await client.acount_jobs() == await engine.acount_jobs()
    assert await client.acount_jobs(queue="errors", tenant="acme") == await engine.acount_jobs(
        queue="errors", tenant="acme"
    )


async def test_pages_are_followed(
    client: AdminClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dispatch_plugins.admin.client.MAX_LIMIT", 2)
    everything = await engine.alist_jobs(limit=100)
    assert len(everything) > 5
    assert await client.alist_jobs(limit=5) == everything[:5]
    assert await client.alist_jobs(limit=100) == everything
    after = everything[2].id
    assert await client.alist_jobs(after=after, limit=3) == everything[3:6]
    assert await client.alist_jobs(after=after, order="asc") == await engine.alist_jobs(
        after=after, order="asc"
    )


async def test_dead_letters(client: AdminClient, engine: Engine) -> None:
    entries = await engine.alist_dlq()
    assert len(entries) == 3
    assert await client.alist_dlq() == entries
    assert await client.alist_dlq(order="desc", limit=2) == entries[::-1][:2]
    assert await client.alist_dlq(after=entries[0].id) == entries[1:]
    assert await client.alist_dlq(queue="default") == []
    assert await client.alist_dlq(name="app.boom") == entries
    assert await client.aget_dlq(entries[1].id) == entries[1]
    assert await client.acount_dlq() == 3
    assert await client.acount_dlq(queue="errors", tenant="acme") == 0


async def test_cron_queues_and_workers(client: AdminClient, engine: Engine) -> None:
    assert await client.acron_entries() == await engine.acron_entries()
    assert await client.aget_cron("nightly-report") == await engine.aget_cron("nightly-report")
    assert await client.aqueues() == await engine.aqueues()
    assert await client.aworkers() == await engine.aworkers()
    leader = await client.aleader()
    assert leader is not None
    assert leader == await engine.aleader()


async def test_workflow_runs(client: AdminClient, engine: Engine, shared: Served) -> None:
    run_id = shared[1].runs[0]
    assert await client.alist_runs() == await engine.alist_runs()
    assert await client.alist_runs(state="waiting", order="asc") == await engine.alist_runs(
        state="waiting", order="asc"
    )
    assert await client.aget_run(run_id) == await engine.aget_run(run_id)
    timeline = await client.atimeline(run_id)
    assert timeline == await engine.atimeline(run_id)
    assert [s.name for s in timeline][:1] == ["reserve"]


@pytest.mark.parametrize(
    ("call", "error", "attribute"),
    [
        (lambda c: c.aget_job("job_nope"), JobNotFoundError, "job_id"),
        (lambda c: c.acancel("job_nope"), JobNotFoundError, "job_id"),
        (lambda c: c.aget_dlq("dlq_nope"), DLQEntryNotFoundError, "entry_id"),
        (lambda c: c.areplay_dlq("dlq_nope"), DLQEntryNotFoundError, "entry_id"),
        (lambda c: c.aget_cron("nope"), CronNotFoundError, "name"),
        (lambda c: c.atrigger_cron("nope"), CronNotFoundError, "name"),
        (lambda c: c.aget_run("wfrun_nope"), RunNotFoundError, "run_id"),
        (lambda c: c.atimeline("wfrun_nope"), RunNotFoundError, "run_id"),
    ],
    ids=[
        "job",
        "cancel",
        "dlq",
        "replay",
        "cron",
        "trigger",
        "run",
        "timeline",
    ],
)
async def test_unknown_objects_raise_the_core_errors(
    client: AdminClient,
    call: Callable[[AdminClient], object],
    error: type[Exception],
    attribute: str,
) -> None:
    with pytest.raises(error, match="not found") as caught:
        await call(client)  # type: ignore[misc]
    assert getattr(caught.value, attribute).endswith("nope")


async def test_unhandled_jobs() -> None:
    """Jobs enqueued under names the server's workers lack, on a store the server shares with
    another deployment (the memory store, shared by object: this test needs no SQLite)."""
    served = live_server.build_engine("memory://")
    other = Engine(served.store, load_entrypoints=False)

    @other.job(name="__main__.welcome", queue="mail")
    def welcome(n: int) -> None:
        return None

    now = utcnow()
    await served.store.register_worker(
        WorkerInfo(
            id=new_id("wkr"),
            hostname="web-1",
            pid=1,
            queues=None,
            concurrency=4,
            version="0.test",
            started_at=now,
            last_seen=now,
            names=tuple(sorted(served.jobs)),
        )
    )
    await other.aenqueue("__main__.welcome", 1)
    with tenant_scope("acme"):
        await other.aenqueue("__main__.welcome", 2)
        await other.aenqueue("__main__.welcome", 3)
    with tenant_scope("globex"):
        await other.aenqueue("__main__.welcome", 4)
    server = live_server.LiveServer(served)
    server.start()
    try:
        async with AdminClient(server.url, live_server.OPS) as client:
            everything = await client.aunhandled_jobs()
            assert everything == [RunnableCount(queue="mail", name="__main__.welcome", count=4)]
            assert everything == await other.aunhandled_jobs()
            assert await client.aunhandled_jobs(tenant="globex") == [
                RunnableCount(queue="mail", name="__main__.welcome", count=1)
            ]
            assert await client.aunhandled_jobs(tenant="initech") == []
        async with AdminClient(server.url, live_server.ACME) as client:
            assert await client.aunhandled_jobs() == [
                RunnableCount(queue="mail", name="__main__.welcome", count=2)
            ]
            with pytest.raises(AdminAuthError, match="operator token") as caught:
                await client.aunhandled_jobs(tenant="globex")
            assert caught.value.code == "operator_only"
    finally:
        server.stop()


async def test_a_server_without_the_unhandled_route() -> None:
    # An older server reads /jobs/unhandled as the job "unhandled".
    body = {"error": {"code": "not_found", "message": "job 'unhandled' not found", "details": None}}
    with pytest.raises(AdminAPIError, match=r"does not offer this yet .* upgrade dispatch-admin"):
        await mocked(_answer(404, json=body)).aunhandled_jobs()
    with pytest.raises(AdminAPIError, match="answered without items"):
        await mocked(_answer(200, json=[])).aunhandled_jobs()
    with pytest.raises(AdminAPIError, match=r"cannot read the answer .* compatible"):
        await mocked(_answer(200, json={"items": [{"queue": "q"}]})).aunhandled_jobs()


# -- changing things ------------------------------------------------------------------------------


async def test_jobs_cancel_and_retry(own: Served) -> None:
    live, data, store = own
    async with AdminClient(live.url, live_server.OPS) as client:
        cancelled = await client.acancel(data.pending[0])
        assert cancelled.state is JobState.CANCELLED
        with pytest.raises(InvalidTransitionError, match="cannot go from") as caught:
            await client.acancel(data.pending[0])
        assert caught.value.job_id == data.pending[0]
        assert caught.value.current == "cancelled"
        retried = await client.aretry(data.pending[0])
        assert (retried.state, retried.attempt) == (JobState.PENDING, 0)
        with pytest.raises(InvalidTransitionError):
            await client.aretry(data.pending[0])
    engine = live_server.build_engine(store)
    try:
        assert await engine.aget_job(data.pending[0]) == retried
    finally:
        await engine.aclose()


async def test_dlq_replay_and_purge(own: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    live, _, _ = own
    monkeypatch.setattr("dispatch_plugins.admin.client._PURGE_MAX", 3)
    async with AdminClient(live.url, live_server.OPS) as client:
        entries = await client.alist_dlq()
        job = await client.areplay_dlq(entries[0].id)
        assert (job.name, job.state) == ("app.boom", JobState.PENDING)
        replayed = await client.aget_dlq(entries[0].id)
        assert replayed.replayed_at is not None
        assert await client.alist_dlq(replayed=True) == [replayed]
        assert await client.alist_dlq(replayed=False) == entries[1:]
        assert await client.acount_dlq(replayed=False) == len(entries) - 1
        assert await client.acount_dlq(replayed=True, queue="default") == 0
        cut = entries[-1].failed_at
        older = sum(1 for e in entries if e.failed_at < cut)
        assert await client.acount_dlq(before=cut) == older
        with pytest.raises(ValueError, match="timezone"):
            await client.acount_dlq(before=cut.replace(tzinfo=None))
        assert await client.apurge_dlq(older_than=timedelta(days=1)) == 0
        later = utcnow() + timedelta(minutes=1)
        assert await client.apurge_dlq(before=later, limit=2) == 2
        assert await client.apurge_dlq(before=later, queue="default") == 0
        assert await client.apurge_dlq(before=later) == 6  # three requests of at most 3
        assert await client.acount_dlq() == 0
        with pytest.raises(ValueError, match="exactly one"):
            await client.apurge_dlq()
        with pytest.raises(ValueError, match="timezone"):
            await client.apurge_dlq(before=later.replace(tzinfo=None))


async def test_cron_and_queues(own: Served) -> None:
    live, _, _ = own
    async with AdminClient(live.url, live_server.OPS) as client:
        assert (await client.adisable_cron("nightly-report")).enabled is False
        assert (await client.aenable_cron("nightly-report")).enabled is True
        job = await client.atrigger_cron("hourly-thumbs")
        assert (job.name, job.queue) == ("app.thumb", "images")
        assert await client.aresume_queue("images") is None
        assert not {q.name: q for q in await client.aqueues()}["images"].paused
        await client.apause_queue("default")
        assert {q.name: q for q in await client.aqueues()}["default"].paused


async def test_workflow_steering(own: Served) -> None:
    live, data, _ = own
    first, second = data.runs
    async with AdminClient(live.url, live_server.OPS) as client:
        assert await client.asend_event("paid", {"cents": 5}, run_id=first) == [first]
        cancelled = await client.acancel_run(second)
        assert cancelled.state.value == "cancelled"
        with pytest.raises(WorkflowError, match="already cancelled"):
            await client.acancel_run(second)
        fork = await client.areplay_run(second, "reserve")
        assert fork.id != second
        assert fork.name == "app.order"
        with pytest.raises(ValueError, match="run_id or correlation_key"):
            await client.asend_event("paid")


async def test_a_client_can_be_used_again_after_aclose(shared: Served) -> None:
    client = AdminClient(shared[0].url, live_server.OPS)
    first = await client.acount_dlq()
    await client.aclose()
    assert await client.acount_dlq() == first
    await client.aclose()
    await client.aclose()


# -- refusals --------------------------------------------------------------------------------------


async def test_no_token(shared: Served) -> None:
    async with AdminClient(shared[0].url) as client:
        with pytest.raises(AdminAuthError, match="DISPATCH_TOKEN is not set") as caught:
            await client.alist_jobs()
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")


async def test_a_wrong_token(shared: Served) -> None:
    async with AdminClient(shared[0].url, "a-token-nobody-configured") as client:
        with pytest.raises(AdminAuthError, match="refused the token in DISPATCH_TOKEN"):
            await client.aworkers()


async def test_a_missing_scope_and_an_operator_route(shared: Served) -> None:
    async with AdminClient(shared[0].url, live_server.READER) as client:
        await client.alist_jobs()
        with pytest.raises(AdminAuthError, match="scope 'dlq:write'") as caught:
            await client.areplay_dlq("dlq_x")
        assert caught.value.details == {"required": "dlq:write"}
    async with AdminClient(shared[0].url, live_server.ACME) as client:
        with pytest.raises(AdminAuthError, match="operator token") as caught:
            await client.acron_entries()
        assert caught.value.code == "operator_only"


async def test_a_server_without_tokens(tmp_path: Path) -> None:
    server = live_server.LiveServer(Engine("memory://", load_entrypoints=False), tokens=[])
    server.start()
    try:
        async with AdminClient(server.url, "anything-at-all-here") as client:
            with pytest.raises(AdminAuthError, match="has no tokens configured"):
                await client.alist_jobs()
    finally:
        server.stop()


async def test_a_refused_connection() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/dispatch"
        async with AdminClient(url, "t") as client:
            with pytest.raises(AdminUnavailableError, match=f"cannot connect to .* at {url}"):
                await client.alist_jobs()


def _answer(status: int, **kwargs: object) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, **kwargs)  # type: ignore[arg-type]


async def test_a_timeout() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(AdminUnavailableError, match="did not answer GET /v1/dlq/count within 30s"):
        await mocked(slow).acount_dlq()


async def test_a_proxy_error_page() -> None:
    client = mocked(_answer(502, text="<html>Bad Gateway</html>"))
    with pytest.raises(AdminAPIError, match="answered GET /v1/jobs with 502 Bad Gateway"):
        await client.alist_jobs()


async def test_a_store_outage_is_a_store_unavailable_error() -> None:
    body = {"error": {"code": "store_unavailable", "message": "the store is down", "details": None}}
    with pytest.raises(StoreUnavailableError, match="the store is down"):
        await mocked(_answer(503, json=body)).aqueues()


async def test_something_else_than_the_api() -> None:
    with pytest.raises(AdminAPIError, match="did not answer with JSON"):
        await mocked(_answer(200, text="<html>welcome</html>")).aworkers()
    with pytest.raises(AdminAPIError, match="answered without items"):
        await mocked(_answer(200, json={"hello": "world"})).aworkers()
    with pytest.raises(AdminAPIError, match="does not look like a Dispatch admin API"):
        await mocked(_answer(404, text="Not Found")).aget_job("job_x")
    with pytest.raises(AdminAPIError, match=r"cannot read the answer .* compatible"):
        await mocked(_answer(200, json={"id": "job_x"})).aget_job("job_x")


async def test_other_api_errors_keep_their_code() -> None:
    body = {"error": {"code": "invalid_request", "message": "limit is wrong", "details": None}}
    with pytest.raises(AdminAPIError, match=r"^limit is wrong$") as caught:
        await mocked(_answer(400, json=body)).alist_jobs()
    assert (caught.value.status, caught.value.code) == (400, "invalid_request")
