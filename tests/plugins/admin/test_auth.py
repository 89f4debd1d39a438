"""Tokens: configuration, constant-time lookup, 401 without a valid one, 403 for a missing
scope (route by route) or a tenant token on an operator route, and secrets kept out of logs
and messages."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest

from dispatch_plugins.admin import auth
from dispatch_plugins.admin.app import admin_app
from dispatch_plugins.admin.auth import Authenticator, Scope, Token, load_tokens, parse_tokens
from dispatch_plugins.admin.routes import ENDPOINTS, Endpoint

SECRET = "s3cret-s3cret-s3cret"
SCOPED = [e for e in ENDPOINTS if e.scope is not None]


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


# -- configuration ---------------------------------------------------------------------------------


def test_a_token_is_validated_and_its_secret_never_shown() -> None:
    token = Token(name="ops", secret=SECRET, scopes=frozenset({"jobs:read"}), tenant="acme")
    assert SECRET not in repr(token)
    assert SECRET not in str(token)
    with pytest.raises(ValueError, match=r"'short'.*at least 16") as caught:
        Token(name="short", secret="fifteen-chars-x", scopes=frozenset({"read"}))
    assert "fifteen-chars-x" not in str(caught.value)
    with pytest.raises(ValueError, match="'jobs:delete'"):
        Token(name="t", secret=SECRET, scopes=frozenset({"jobs:read", "jobs:delete"}))
    with pytest.raises(ValueError, match="name"):
        Token(name=" ", secret=SECRET, scopes=frozenset())
    with pytest.raises(ValueError, match="tenant"):
        Token(name="t", secret=SECRET, scopes=frozenset(), tenant="")
    assert Token(name="t", secret=SECRET, scopes="read").scopes == {"read"}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("scopes", "granted", "refused"),
    [
        ({"read"}, ["jobs:read", "cron:read", "stats:read"], ["jobs:write", "dlq:write"]),
        ({"admin"}, [s.value for s in Scope], []),
        ({"jobs:write"}, ["jobs:write"], ["jobs:read", "dlq:write"]),
    ],
)
def test_read_and_admin_imply_scopes(
    scopes: set[str], granted: list[str], refused: list[str]
) -> None:
    token = Token(name="t", secret=SECRET, scopes=frozenset(scopes))
    assert all(token.allows(s) for s in granted)
    assert not any(token.allows(s) for s in refused)


def test_parse_and_load_tokens(tmp_path: Any) -> None:
    config = [
        {"name": "ops", "token": SECRET, "scopes": ["admin"]},
        {"name": "acme", "token": SECRET + "2", "scopes": ["read"], "tenant": "acme"},
    ]
    tokens = parse_tokens(json.dumps(config))
    assert [(t.name, t.scopes, t.tenant) for t in tokens] == [
        ("ops", {"admin"}, None),
        ("acme", {"read"}, "acme"),
    ]
    assert parse_tokens(config) == tokens
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(config))
    assert load_tokens(path) == tokens
    assert load_tokens(environ={"DISPATCH_ADMIN_TOKENS": json.dumps(config)}) == tokens
    assert load_tokens(environ={}) == []
    assert load_tokens(environ={"DISPATCH_ADMIN_TOKENS": "  "}) == []


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("{", "not valid JSON"),
        ('{"name": "x"}', "list"),
        ("[1]", "item 0 is not an object"),
        ('[{"name": "x", "scopes": []}]', "lacks token"),
        (f'[{{"name": "x", "token": "{SECRET}", "scopes": "read"}}]', "list of strings"),
        (f'[{{"name": "x", "token": "{SECRET}", "scopes": [], "secret": 1}}]', "unknown field"),
        (f'[{{"name": "x", "token": "{SECRET}", "scopes": ["root"]}}]', "'root'"),
        ('[{"name": "x", "token": "short", "scopes": []}]', "at least 16"),
        (
            f'[{{"name": "a", "token": "{SECRET}", "scopes": []}}, '
            f'{{"name": "b", "token": "{SECRET}", "scopes": []}}]',
            "same secret",
        ),
    ],
)
def test_bad_configuration_is_a_value_error_without_the_secret(config: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        parse_tokens(config)
    assert SECRET not in str(caught.value)
    assert "short" not in str(caught.value).split(":")[0]


def test_admin_app_reads_the_environment(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    config = [{"name": "ops", "token": SECRET, "scopes": ["jobs:read"], "tenant": "zz"}]
    monkeypatch.setenv("DISPATCH_ADMIN_TOKENS", json.dumps(config))
    admin_app(engine)  # valid
    monkeypatch.setenv("DISPATCH_ADMIN_TOKENS", '[{"name": "x", "token": "1", "scopes": []}]')
    with pytest.raises(ValueError, match="at least 16"):
        admin_app(engine)


def test_every_token_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = [
        Token(name=f"t{i}", secret=f"{SECRET}-{i}", scopes=frozenset({"read"})) for i in range(5)
    ]
    authenticator = Authenticator(tokens)
    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for header, expected in [
        (f"Bearer {SECRET}-0", "t0"),
        (f"bearer {SECRET}-4", "t4"),
        ("Bearer nope", None),
    ]:
        calls.clear()
        found = authenticator.authenticate(header)
        assert (found.name if found else None) == expected
        assert len(calls) == 5
        assert all(len(a) == len(b) == 32 for a, b in calls)  # digests: equal lengths
    calls.clear()
    assert authenticator.authenticate(f"Basic {SECRET}-0") is None
    assert authenticator.authenticate(None) is None
    assert authenticator.authenticate("") is None


# -- 401 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", f"Basic {SECRET}", "Bearer wrong-token-wrong-token", SECRET],
)
async def test_no_valid_token_is_401_with_a_challenge(api: Any, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = await api.client.get("/dispatch/v1/jobs", headers=headers)
    api.error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_without_tokens_every_api_request_is_refused(
    make_api: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("DISPATCH_ADMIN_TOKENS", raising=False)
    with caplog.at_level(logging.WARNING, logger="dispatch_plugins.admin"):
        async with make_api(tokens=None) as api:
            for token in (None, api.OPS):
                api.error(await api.get("/jobs", token=token), 401, "no_tokens_configured")
            assert (await api.get("/health/live", token=None)).status_code == 200
            assert (await api.get("/health/ready", token=None)).status_code == 200
            assert (await api.get("/openapi.json", token=None)).status_code == 200
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "no tokens configured" in caplog.records[0].message


# -- 403 -------------------------------------------------------------------------------------------


async def call_endpoint(api: Any, endpoint: Endpoint, token: str) -> Any:
    kw: dict[str, Any] = {"token": token}
    if endpoint.method == "POST":
        kw["json"] = {}
    return await api.request(endpoint.method, concrete(endpoint.path), **kw)


@pytest.mark.parametrize("endpoint", SCOPED, ids=lambda e: f"{e.method} {e.path}")
async def test_each_route_needs_its_scope(make_api: Any, endpoint: Endpoint) -> None:
    assert endpoint.scope is not None
    others = {s.value for s in Scope} - {endpoint.scope.value, "read", "admin"}
    tokens = [
        Token(name="lacking", secret="lacking-" + SECRET, scopes=frozenset(others)),
        Token(name="exact", secret="exact-" + SECRET, scopes=frozenset({endpoint.scope.value})),
    ]
    async with make_api(tokens=tokens) as api:
        refused = await call_endpoint(api, endpoint, "lacking-" + SECRET)
        error = api.error(refused, 403, "forbidden")
        assert error["details"] == {"required": endpoint.scope.value}
        assert "lacking" in error["message"]
        assert SECRET not in error["message"]
        allowed = await call_endpoint(api, endpoint, "exact-" + SECRET)
        assert allowed.status_code not in (401, 403), allowed.text


@pytest.mark.parametrize(
    "endpoint", [e for e in SCOPED if e.operator_only], ids=lambda e: f"{e.method} {e.path}"
)
async def test_operator_routes_refuse_tenant_tokens(api: Any, endpoint: Endpoint) -> None:
    # The tenant token has the scope "admin": no scope opens an operator route to a tenant.
    refused = await call_endpoint(api, endpoint, api.A)
    api.error(refused, 403, "operator_only")
    allowed = await call_endpoint(api, endpoint, api.OPS)
    assert allowed.status_code not in (401, 403), allowed.text


def test_the_operator_routes_are_the_cluster_ones() -> None:
    operator = {(e.method, e.path) for e in SCOPED if e.operator_only}
    assert {path.split("/")[1] for _, path in operator} == {"queues", "workers", "cron"}


@pytest.mark.parametrize("endpoint", SCOPED, ids=lambda e: f"{e.method} {e.path}")
async def test_the_read_scope_reads_but_never_writes(api: Any, endpoint: Endpoint) -> None:
    response = await call_endpoint(api, endpoint, api.READER)
    assert endpoint.scope is not None
    if endpoint.scope.value.endswith(":read"):
        assert response.status_code not in (401, 403), response.text
    else:
        api.error(response, 403, "forbidden")


async def test_secrets_never_reach_the_log(
    api: Any, world: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        await api.get("/jobs", token="wrong-but-long-enough-secret")
        await api.get("/queues", token=api.A)
        await api.get("/jobs", token=api.READER)
        await api.post("/jobs", token=api.READER, json={"name": "send", "payload": 1})
    for secret in (api.OPS, api.A, api.READER, "wrong-but-long-enough-secret"):
        assert secret not in caplog.text
