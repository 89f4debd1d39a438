"""Issue 16's low findings in the admin API, each reproduced as the review found it:

- the unauthenticated readiness probe told the store's user, host and database;
- a tokens file others may read loaded without a word; ``"tenant": null`` made an operator token;
- tenant tokens chose any queue, a higher priority and a past ``run_at`` in shared queues;
- ``job_id`` told a tenant whether another tenant's job had an id, and let it take ids;
- JSON answers lacked ``nosniff`` and ``no-store``;
- year-1 and year-9999 times with an offset answered 500 (and out-of-range ``run_at`` values
  stalled every Redis worker of the queue).

Every request goes through the real app over HTTP (httpx's ASGI transport) on real stores.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dispatch_core import Engine, JobNotFoundError, StoreUnavailableError, tenant_scope
from dispatch_core.models import utcnow
from dispatch_plugins.admin.app import admin_app
from dispatch_plugins.admin.auth import Token, load_tokens, parse_tokens

SECRET = "s3cret-s3cret-s3cret"
OPS = "ops-secret-0123456789"
TENANT = "tenant-a-secret-0123"


@pytest.fixture(params=["memory", "sqlite"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """The API tests of this module run on the memory store and on SQLite."""
    return str(request.param)


# -- 1. the readiness probe says nothing of the store -------------------------------------------


async def test_readiness_does_not_tell_the_store_s_address(
    api: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # What a PostgreSQL store reports, plus a URL with its password as a driver may quote it.
    async def down() -> None:
        raise StoreUnavailableError(
            "cannot use PostgreSQL at dbuser@db.internal:5432/proddb: connection refused "
            "(postgresql://dbuser:hunter2@db.internal:5432/proddb?sslpassword=pem-secret)"
        )

    monkeypatch.setattr(api.engine, "aleader", down)
    with caplog.at_level(logging.WARNING, logger="dispatch_plugins.admin"):
        response = await api.get("/health/ready", token=None)
    error = api.error(response, 503, "store_unavailable")
    assert error["message"] == (
        "the store is not ready (StoreUnavailableError); the server log has the details"
    )
    for secret in ("dbuser", "db.internal", "5432", "proddb", "hunter2", "postgresql"):
        assert secret not in response.text
    # The operator's log has the whole error, its secrets masked.
    [record] = [r for r in caplog.records if "readiness" in r.getMessage()]
    assert record.levelno == logging.WARNING
    logged = record.getMessage()
    assert "dbuser@db.internal:5432/proddb" in logged
    assert "postgresql://dbuser:***@db.internal:5432/proddb?sslpassword=***" in logged
    assert "hunter2" not in logged
    assert "pem-secret" not in logged


async def test_a_tenant_token_is_not_told_the_store_s_address_either(
    api: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def down(**_: Any) -> None:
        raise StoreUnavailableError(
            "cannot use PostgreSQL at dbuser@db.internal:5432/proddb "
            "(postgresql://dbuser:hunter2@db.internal/proddb)"
        )

    monkeypatch.setattr(api.engine, "alist_jobs", down)
    with caplog.at_level(logging.WARNING, logger="dispatch_plugins.admin"):
        theirs = await api.get("/jobs", token=api.A)
        operator = await api.get("/jobs")
    error = api.error(theirs, 503, "store_unavailable")
    assert error["message"] == (
        "the store is unavailable (StoreUnavailableError); the server log has the details"
    )
    for secret in ("dbuser", "db.internal", "proddb", "hunter2"):
        assert secret not in theirs.text
    # The operator's token, trusted with the deployment, still gets the store's words, with
    # any password masked as in the log.
    assert (
        "dbuser@db.internal:5432/proddb" in api.error(operator, 503, "store_unavailable")["message"]
    )
    assert "hunter2" not in operator.text
    assert "hunter2" not in caplog.text
    assert "postgresql://dbuser:***@db.internal/proddb" in caplog.text


async def test_readiness_on_a_real_unreachable_postgresql(
    caplog: pytest.LogCaptureFixture, make_api: Any
) -> None:
    pytest.importorskip("dispatch_plugins.postgres")
    # Port 1 refuses at once: the store's own error names user, host, port and database.
    engine = Engine("postgresql://dbuser:hunter2@127.0.0.1:1/proddb")
    try:
        async with make_api(on=engine) as api:
            with caplog.at_level(logging.WARNING, logger="dispatch_plugins.admin"):
                response = await api.get("/health/ready", token=None)
    finally:
        await engine.aclose()
    api.error(response, 503, "store_unavailable")
    assert "StoreUnavailableError" in response.text
    for secret in ("dbuser", "127.0.0.1", "proddb", "hunter2"):
        assert secret not in response.text
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "dbuser@127.0.0.1:1/proddb" in logged
    assert "hunter2" not in logged


# -- 2. a tokens file others may read -------------------------------------------------------------


def _tokens_file(path: Path, mode: int) -> Path:
    path.write_text(json.dumps([{"name": "ops", "token": SECRET, "scopes": ["admin"]}]))
    path.chmod(mode)
    return path


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
@pytest.mark.parametrize(
    ("mode", "grants"),
    [
        (0o644, "read to its group, read to others"),
        (0o640, "read to its group"),
        (0o604, "read to others"),
        (0o620, "write to its group"),
        (0o666, "read and write to its group, read and write to others"),
    ],
)
def test_a_tokens_file_others_may_read_is_loaded_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, grants: str
) -> None:
    path = _tokens_file(tmp_path / "my tokens.json", mode)
    with caplog.at_level(logging.WARNING, logger="dispatch_plugins.admin"):
        tokens = load_tokens(path)
    assert [t.name for t in tokens] == ["ops"]
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert f"admin tokens file {path} grants {grants} (mode {mode:04o})" in message
    assert f"chmod 600 '{path}'" in message  # quoted: the path has a space
    assert SECRET not in message


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_tokens_file_loads_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int
) -> None:
    path = _tokens_file(tmp_path / "tokens.json", mode)
    with caplog.at_level(logging.DEBUG, logger="dispatch_plugins.admin"):
        load_tokens(path)
    assert caplog.records == []


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_dispatch_serve_prints_the_warning_on_stderr(tmp_path: Path) -> None:
    path = _tokens_file(tmp_path / "tokens.json", 0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    # --worker without an app stops the command right after the tokens are loaded.
    done = subprocess.run(
        [
            *(sys.executable, "-m", "dispatch_core.cli", "serve", "--url", "memory://"),
            *("--tokens-file", str(path), "--worker"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    [warning] = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert "dispatch_plugins.admin:" in warning
    assert f"admin tokens file {path} grants read to its group, read to others" in warning
    assert f"chmod 600 {path}" in warning
    assert SECRET not in done.stderr
    assert "--worker needs APP" in done.stderr


# -- 3. "tenant": null ---------------------------------------------------------------------------


def test_a_null_tenant_is_refused_naming_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: Engine
) -> None:
    config: list[dict[str, Any]] = [
        {"name": "ops", "token": SECRET, "scopes": ["admin"]},
        {"name": "acme-ci", "token": SECRET + "-2", "scopes": ["jobs:write"], "tenant": None},
    ]
    text = json.dumps(config)
    with pytest.raises(ValueError, match=r"item 1 \(token 'acme-ci'\): \"tenant\": null") as caught:
        parse_tokens(text)
    message = str(caught.value)
    assert "leave the tenant key out" in message
    assert SECRET not in message
    # From the environment variable, the file, and the app reading the variable itself.
    with pytest.raises(ValueError, match="acme-ci"):
        load_tokens(environ={"DISPATCH_ADMIN_TOKENS": text})
    path = tmp_path / "tokens.json"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(ValueError, match="acme-ci"):
        load_tokens(path)
    monkeypatch.setenv("DISPATCH_ADMIN_TOKENS", text)
    with pytest.raises(ValueError, match="acme-ci"):
        admin_app(engine)
    # Without a usable name, the item's index alone.
    nameless: list[dict[str, Any]] = [{"name": "", "token": SECRET, "scopes": [], "tenant": None}]
    with pytest.raises(ValueError, match=r"item 0: \"tenant\": null"):
        parse_tokens(nameless)
    # Leaving the key out makes the operator token, as documented.
    del config[1]["tenant"]
    assert [t.tenant for t in parse_tokens(json.dumps(config))] == [None, None]


def test_dispatch_serve_refuses_a_null_tenant(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from dispatch_core.cli import cli

    for name in [n for n in os.environ if n.startswith("DISPATCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv(
        "DISPATCH_ADMIN_TOKENS",
        json.dumps([{"name": "acme-ci", "token": SECRET, "scopes": ["admin"], "tenant": None}]),
    )
    # --worker without an app: were the token accepted, the command would stop next (not serve).
    result = CliRunner().invoke(cli, ["serve", "--url", "memory://", "--worker"])
    assert result.exit_code == 1
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("Error: cannot load the admin tokens from DISPATCH_ADMIN_TOKENS")
    assert "'acme-ci'" in line
    assert SECRET not in line


# -- 4. tenant tokens keep to their job's queue and priority --------------------------------------


def _shared_engine(url: str) -> Engine:
    engine = Engine(url)

    @engine.job(name="mail", queue="emails", priority=5)
    async def mail(n: int) -> int:
        return n

    @engine.job(name="plain")
    async def plain(n: int) -> int:
        return n

    return engine


@pytest.fixture
async def shared(store_kind: str, tmp_path: Path) -> AsyncIterator[Engine]:
    url = "memory://" if store_kind == "memory" else f"sqlite:///{tmp_path / 'shared.db'}"
    engine = _shared_engine(url)
    yield engine
    await engine.aclose()


TOKENS = [
    Token(name="ops", secret=OPS, scopes=frozenset({"admin"})),
    Token(name="acme", secret=TENANT, scopes=frozenset({"jobs:write", "read"}), tenant="A"),
]


async def _jobs(engine: Engine) -> list[Any]:
    return await engine.alist_jobs(limit=1000)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"queue": "default"}, "queue"),
        ({"queue": "urgent"}, "queue"),
        ({"priority": 6}, "priority"),
        ({"priority": 2**31 - 1}, "priority"),
    ],
)
async def test_a_tenant_token_may_not_move_its_job_to_another_queue_or_raise_it(
    make_api: Any, shared: Engine, options: dict[str, Any], field: str
) -> None:
    async with make_api(on=shared, tokens=TOKENS) as api:
        response = await api.post(
            "/jobs", token=TENANT, json={"name": "mail", "payload": 1, **options}
        )
        error = api.error(response, 403, "option_not_allowed")
        assert error["details"]["field"] == field
        assert field in error["message"]
        assert await _jobs(shared) == []  # nothing was written
        # The operator's token is not limited.
        job = await api.ok("POST", "/jobs", 201, json={"name": "mail", "payload": 1, **options})
        assert job[field] == options[field]


async def test_what_a_tenant_token_may_still_choose(make_api: Any, shared: Engine) -> None:
    async with make_api(on=shared, tokens=TOKENS) as api:
        refused = await api.post(
            "/jobs", token=TENANT, json={"name": "mail", "payload": 1, "queue": "default"}
        )
        assert api.error(refused, 403, "option_not_allowed")["details"] == {
            "field": "queue",
            "allowed": ["emails"],
        }
        raised = await api.post(
            "/jobs", token=TENANT, json={"name": "mail", "payload": 1, "priority": 6}
        )
        assert api.error(raised, 403, "option_not_allowed")["details"] == {
            "field": "priority",
            "maximum": 5,
        }
        # Its own queue, named; the job's priority or a lower one.
        for options in ({"queue": "emails"}, {"priority": 5}, {"priority": -3}, {}):
            job = await api.ok(
                "POST", "/jobs", 201, token=TENANT, json={"name": "mail", "payload": 1, **options}
            )
            assert job["queue"] == "emails"
            assert job["priority"] == options.get("priority", 5)
            assert job["tenant"] == "A"


async def test_a_tenant_token_s_past_run_at_is_taken_as_now(make_api: Any, shared: Engine) -> None:
    async with make_api(on=shared, tokens=TOKENS) as api:
        # Jobs waiting in the shared queue, enqueued by others before.
        with tenant_scope("B"):
            waiting = await shared.aenqueue("plain", 1)
        before = utcnow()
        past = "2001-01-01T00:00:00Z"
        mine = await api.ok(
            "POST", "/jobs", 201, token=TENANT, json={"name": "plain", "payload": 2, "run_at": past}
        )
        job = await shared.aget_job(mine["id"])
        assert before <= job.run_at <= utcnow()
        # So it does not go ahead of the jobs already waiting.
        claimed = await shared.store.claim(
            worker_id="w", queues=None, names=None, limit=1, lease_seconds=30, now=utcnow()
        )
        assert [j.id for j in claimed] == [waiting.id]
        # A future run_at is kept; an operator's past one too.
        later = (utcnow() + timedelta(hours=1)).replace(microsecond=0)
        kept = await api.ok(
            "POST",
            "/jobs",
            201,
            token=TENANT,
            json={"name": "plain", "payload": 3, "run_at": later.isoformat()},
        )
        assert (await shared.aget_job(kept["id"])).run_at == later
        ops = await api.ok(
            "POST", "/jobs", 201, json={"name": "plain", "payload": 4, "run_at": past}
        )
        assert (await shared.aget_job(ops["id"])).run_at == datetime(2001, 1, 1, tzinfo=UTC)


# -- 5. job_id is for operator tokens --------------------------------------------------------------


async def test_a_tenant_token_may_not_choose_a_job_id(api: Any, world: Any) -> None:
    # B's job has an id chosen by the operator; A tries it, and an id no job has.
    theirs = await api.ok(
        "POST", "/jobs", 201, json={"name": "send", "payload": 1, "job_id": "inv-7", "tenant": "B"}
    )
    before = await api.engine.alist_jobs(tenant="A", limit=1000)
    taken = await api.post(
        "/jobs", token=api.A, json={"name": "send", "payload": 2, "job_id": "inv-7"}
    )
    free = await api.post(
        "/jobs", token=api.A, json={"name": "send", "payload": 2, "job_id": "inv-8"}
    )
    error = api.error(taken, 403, "option_not_allowed")
    assert error["details"] == {"field": "job_id", "use": "unique_key"}
    assert "unique_key" in error["message"]
    # The same answer whether another tenant's job has the id or not: no oracle.
    assert (free.status_code, free.content) == (taken.status_code, taken.content)
    # Nothing was written: A's jobs are as they were, no job took the free id, B's is intact.
    assert await api.engine.alist_jobs(tenant="A", limit=1000) == before
    with pytest.raises(JobNotFoundError):
        await api.engine.aget_job("inv-8")
    assert (await api.engine.aget_job("inv-7")).tenant == "B"
    assert (await api.engine.aget_job("inv-7")).payload == 1
    assert theirs["id"] == "inv-7"
    # The tenant-scoped way works: unique_key dedupes within A.
    first = await api.ok(
        "POST",
        "/jobs",
        201,
        token=api.A,
        json={"name": "send", "payload": 2, "unique_key": "inv-7"},
    )
    again = await api.ok(
        "POST",
        "/jobs",
        200,
        token=api.A,
        json={"name": "send", "payload": 2, "unique_key": "inv-7"},
    )
    assert first["id"] == again["id"] != "inv-7"
    # Operator tokens still choose ids.
    assert (
        await api.ok("POST", "/jobs", 201, json={"name": "send", "payload": 5, "job_id": "x-1"})
    )["id"] == "x-1"


# -- 6. nosniff and no-store -----------------------------------------------------------------------


async def test_every_api_answer_is_nosniff_and_no_store(
    make_api: Any, world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_api(raise_app_exceptions=False) as api:
        answers = {
            "200": await api.get("/jobs"),
            "201": await api.post("/jobs", json={"name": "send", "payload": 1}),
            "400": await api.get("/jobs", params={"limit": "x"}),
            "401": await api.get("/jobs", token=None),
            "403": await api.get("/queues", token=api.A),
            "404 job": await api.get("/jobs/job_nope"),
            "404 route": await api.get("/nope"),
            "405": await api.request("DELETE", "/jobs"),
            "422": await api.post("/jobs", json={"name": "nope"}),
            "health": await api.get("/health/live", token=None),
            "openapi": await api.get("/openapi.json", token=None),
        }

        async def boom(**_: Any) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(api.engine, "alist_jobs", boom)
        answers["500"] = await api.get("/jobs")

        async def down() -> None:
            raise StoreUnavailableError("down")

        monkeypatch.setattr(api.engine, "aleader", down)
        answers["503"] = await api.get("/health/ready", token=None)
        for what, response in answers.items():
            status = what.split()[0]
            if status.isdigit():
                assert response.status_code == int(status), (what, response.text)
            assert response.headers["x-content-type-options"] == "nosniff", what
            assert response.headers.get_list("x-content-type-options") == ["nosniff"], what
            assert response.headers["cache-control"] == "no-store", what

        # The dashboard's files keep their revalidation, with nosniff (not twice).
        for path in ("/dispatch/", "/dispatch/static/app.js"):
            page = await api.client.get(path)
            assert page.status_code == 200
            assert page.headers.get_list("x-content-type-options") == ["nosniff"], path
            assert page.headers["cache-control"] == "no-cache", path
        outside = await api.client.get("/dispatch/nope")
        assert outside.status_code == 404
        assert outside.headers["x-content-type-options"] == "nosniff"
        assert outside.headers["cache-control"] == "no-store"


# -- 8. times out of range -------------------------------------------------------------------------

#: Valid ISO 8601 with an offset, without a UTC form (year 0 and year 10000 in UTC).
UNREPRESENTABLE = ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"]


@pytest.mark.parametrize("value", UNREPRESENTABLE)
async def test_times_without_a_utc_form_are_400_naming_the_field(
    api: Any, world: Any, value: str
) -> None:
    jobs = await api.engine.alist_jobs(limit=1000)
    dead = await api.engine.acount_dlq()
    # Every route that takes a time: the enqueue's run_at, the purge's and the count's cutoff.
    for response, field in [
        (await api.post("/jobs", json={"name": "send", "payload": 1, "run_at": value}), "run_at"),
        (await api.post("/dlq/purge", json={"before": value}), "before"),
        (await api.get("/dlq/count", params={"before": value}), "before"),
        (await api.get("/dlq/count", token=api.A, params={"before": value}), "before"),
    ]:
        error = api.error(response, 400, "invalid_request")
        assert error["details"] == {"field": field}
        assert f"{field} is out of range" in error["message"]
        assert value in error["message"]
    assert await api.engine.alist_jobs(limit=1000) == jobs
    assert await api.engine.acount_dlq() == dead


async def test_the_extreme_utc_times_work_as_cutoffs(api: Any, world: Any) -> None:
    low, high = "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"
    assert await api.ok("GET", "/dlq/count", params={"before": low}) == {"count": 0}
    assert await api.ok("GET", "/dlq/count", params={"before": high}) == {"count": 2}
    assert (await api.ok("POST", "/dlq/purge", json={"before": low}))["purged"] == 0
    assert (await api.ok("POST", "/dlq/purge", json={"before": high}))["purged"] == 2


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999999Z",
        "9999-12-31T23:59:59Z",
        "2200-01-01T00:00:00Z",
        "far future",  # ten years and a day from now
    ],
)
async def test_a_run_at_no_job_can_have_is_refused(api: Any, value: str) -> None:
    if value == "far future":
        value = (utcnow() + timedelta(days=3651)).isoformat()
    response = await api.post("/jobs", json={"name": "send", "payload": 1, "run_at": value})
    error = api.error(response, 400, "invalid_request")
    assert error["details"] == {"field": "run_at"}
    assert "run_at is out of range" in error["message"]
    assert await api.engine.alist_jobs(limit=10) == []


async def test_the_run_at_bounds_are_accepted(api: Any) -> None:
    for value in ["1970-01-01T00:00:00Z", (utcnow() + timedelta(days=3649)).isoformat()]:
        job = await api.ok(
            "POST", "/jobs", 201, json={"name": "send", "payload": 1, "run_at": value}
        )
        assert job["run_at"].startswith(value[:10])
