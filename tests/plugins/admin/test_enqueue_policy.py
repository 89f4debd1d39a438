"""Which job names a token may enqueue through ``POST /v1/jobs`` (issue 16, findings 1 and 3).

- Internal jobs (``internal=True``: the workflow driver, webhook deliveries) are refused to
  every token, with the answer an unknown name gets, so the API does not tell which exist.
- Operator-only jobs (``operator_only=True``, and the job of every cron entry) are refused to
  tenant tokens, as ``/cron/{name}/trigger`` is.
- A token's ``enqueue`` allow-list narrows what it may enqueue.
- A tenant token gets the same ``403 job_not_allowed`` for every name it may not enqueue,
  whatever the reason, so it learns nothing of the jobs it may not use.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from typing import Any

import pytest

from dispatch_core import Engine
from dispatch_core.workflows.runtime import DRIVER_JOB
from dispatch_plugins.admin.auth import Token, load_tokens, name_matches, parse_tokens

LIMITED_A = "limited-a-secret-0123"
LIMITED_OPS = "limited-ops-secret-01"
OTHER = "another-secret-012345"


def tokens_of(api: Any) -> list[Token]:
    """The conftest tokens (operator, tenants A and B) plus two with allow-lists."""
    return [
        Token(name="ops", secret=api.OPS, scopes=frozenset({"admin"})),
        Token(name="acme", secret=api.A, scopes=frozenset({"admin"}), tenant="A"),
        Token(name="bravo", secret=api.B, scopes=frozenset({"jobs:write"}), tenant="B"),
        Token(
            name="acme-mail",
            secret=LIMITED_A,
            scopes=frozenset({"jobs:write"}),
            tenant="A",
            enqueue=["se*", "own"],
        ),
        Token(
            name="ops-ci",
            secret=LIMITED_OPS,
            scopes=frozenset({"jobs:write", "jobs:read"}),
            enqueue=["noop", "*.internal"],
        ),
    ]


def small_engine(url: str) -> Engine:
    engine = Engine(url)

    @engine.job(name="send")
    async def send(n: int) -> None: ...

    @engine.job(name="noop")
    async def noop() -> None: ...

    return engine


@pytest.fixture
def engine_with_flags(engine: Engine) -> Engine:
    """The test engine plus an internal job, an operator-only one and a cron entry."""

    @engine.job(name="own", internal=True)
    async def own(payload: dict[str, Any]) -> None: ...

    @engine.job(name="app.internal", internal=True)
    async def app_internal() -> None: ...

    @engine.job(name="ops.rebuild", operator_only=True)
    async def rebuild() -> None: ...

    @engine.job(name="report", aliases=["report.old"])
    async def report() -> None: ...

    engine.schedule("nightly", "0 3 * * *", "report")
    return engine


@pytest.fixture
async def api(api: Any, engine_with_flags: Engine, make_api: Callable[..., Any]) -> Any:
    """The API of the engine with flags, with the tokens of :func:`tokens_of`."""
    async with make_api(tokens=tokens_of(api)) as limited:
        yield limited


def _anonymised(body: dict[str, Any], name: str) -> str:
    return json.dumps(body).replace(repr(name), "NAME").replace(json.dumps(name), "NAME")


async def test_internal_names_get_the_unknown_name_answer_for_operators(api: Any) -> None:
    unknown = api.error(await api.post("/jobs", json={"name": "nope"}), 422, "unknown_job")
    for name, payload in [
        ("own", {"endpoint": "ops"}),
        ("app.internal", None),
        (DRIVER_JOB, {"run_id": "wfrun_x"}),
    ]:
        body = {"name": name} if payload is None else {"name": name, "payload": payload}
        response = await api.post("/jobs", json=body)
        error = api.error(response, 422, "unknown_job")
        assert _anonymised(error, name) == _anonymised(unknown, "nope")
        assert error["details"] == {"name": name}
    # the list of names the message gives holds no internal job
    listed = unknown["message"].split("registered jobs:")[1]
    for internal in ("own", "app.internal", DRIVER_JOB):
        assert internal not in listed.replace("ops.rebuild", "").split(", ")
    assert await api.engine.alist_jobs() == []


async def test_an_allow_list_matching_an_internal_job_does_not_open_it(api: Any) -> None:
    # ops-ci's list matches "app.internal" and acme-mail's matches "own": both stay refused
    error = api.error(
        await api.post("/jobs", json={"name": "app.internal"}, token=LIMITED_OPS),
        422,
        "unknown_job",
    )
    assert "app.internal" not in error["message"].split("registered jobs:")[1]
    api.error(
        await api.post("/jobs", json={"name": "own", "payload": {}}, token=LIMITED_A),
        403,
        "job_not_allowed",
    )
    assert await api.engine.alist_jobs() == []


async def test_tenant_tokens_cannot_enqueue_operator_only_or_cron_jobs(api: Any) -> None:
    for name in ("ops.rebuild", "report", "report.old"):  # flagged; a cron job; its alias
        error = api.error(
            await api.post("/jobs", json={"name": name}, token=api.A), 403, "job_not_allowed"
        )
        assert error["details"]["field"] == "name"
        assert error["details"]["allowed"] == ["boom", "noop", "send"]
    assert await api.engine.alist_jobs() == []
    # the operator may
    for name in ("ops.rebuild", "report", "report.old"):
        job = await api.ok("POST", "/jobs", 201, json={"name": name})
        assert job["tenant"] is None
    # and may enqueue them in a tenant
    job = await api.ok("POST", "/jobs", 201, json={"name": "report", "tenant": "A"})
    assert job["tenant"] == "A"


async def test_a_cron_entry_stored_by_another_process_makes_its_job_operator_only(
    api: Any, tmp_path: pathlib.Path, make_api: Callable[..., Any]
) -> None:
    pytest.importorskip("dispatch_plugins.sqlite")
    url = "sqlite:///" + str(tmp_path / "cron.db")
    worker_side = small_engine(url)
    worker_side.schedule("hourly", "@hourly", "send", 1)
    await worker_side.apply_schedules()
    await worker_side.aclose()
    worker_side.close()
    served = small_engine(url)  # declares no cron entry itself
    assert served.cron_specs == {}
    tokens = tokens_of(api)
    try:
        async with make_api(on=served, tokens=tokens) as api:
            api.error(
                await api.post("/jobs", json={"name": "send", "payload": 1}, token=api.A),
                403,
                "job_not_allowed",
            )
            await api.ok("POST", "/jobs", 201, json={"name": "send", "payload": 1})
            await api.ok("POST", "/jobs", 201, json={"name": "noop"}, token=api.A)
    finally:
        await served.aclose()
        served.close()


async def test_a_tenant_gets_one_answer_for_every_name_it_may_not_enqueue(api: Any) -> None:
    """Unknown, internal, operator-only, cron and outside its allow-list: the same body, so
    the answer does not tell a tenant which jobs exist."""
    refused = {
        "nope": None,  # unknown
        "own": {},  # internal
        DRIVER_JOB: {"run_id": "wfrun_x"},  # internal, the engine's
        "ops.rebuild": None,  # operator-only
        "report": None,  # the job of a cron entry
    }
    bodies = set()
    for name, payload in refused.items():
        body = {"name": name} if payload is None else {"name": name, "payload": payload}
        error = api.error(await api.post("/jobs", json=body, token=api.B), 403, "job_not_allowed")
        assert "bravo" in error["message"]
        bodies.add(_anonymised(error, name))
    assert len(bodies) == 1, bodies
    # the allow-list case answers alike for the limited token (names outside it, known or not)
    limited = set()
    for name in ("boom", "noop", "nope", "ops.rebuild", "own"):
        error = api.error(
            await api.post("/jobs", json={"name": name}, token=LIMITED_A), 403, "job_not_allowed"
        )
        assert error["details"]["allowed"] == ["send"]
        limited.add(_anonymised(error, name))
    assert len(limited) == 1, limited
    assert await api.engine.alist_jobs() == []


async def test_allow_lists_narrow_what_a_token_may_enqueue(api: Any) -> None:
    # tenant token with ["se*", "own"]: "send" only ("own" is internal)
    job = await api.ok("POST", "/jobs", 201, json={"name": "send", "payload": 1}, token=LIMITED_A)
    assert job["tenant"] == "A"
    # operator token with ["noop", "*.internal"]: noop only, and it is told why for others
    await api.ok("POST", "/jobs", 201, json={"name": "noop"}, token=LIMITED_OPS)
    error = api.error(
        await api.post("/jobs", json={"name": "send", "payload": 1}, token=LIMITED_OPS),
        403,
        "job_not_allowed",
    )
    assert "job 'send'" in error["message"]
    assert "allow-list (noop, *.internal)" in error["message"]
    assert error["details"] == {"field": "name", "allowed": ["noop"]}
    # an unknown name is still unknown for an operator token, listing what it may enqueue
    error = api.error(
        await api.post("/jobs", json={"name": "nope"}, token=LIMITED_OPS), 422, "unknown_job"
    )
    assert error["message"].endswith("registered jobs: noop")
    assert sorted(j.name for j in await api.engine.alist_jobs()) == ["noop", "send"]


async def test_the_unknown_job_list_of_an_operator_holds_every_enqueueable_job(api: Any) -> None:
    error = api.error(await api.post("/jobs", json={"name": "nope"}), 422, "unknown_job")
    listed = error["message"].split("registered jobs: ")[1].split(", ")
    assert listed == ["boom", "noop", "ops.rebuild", "report", "send"]


@pytest.mark.parametrize(
    ("patterns", "name", "expected"),
    [
        (["emails.*"], "emails.send", True),
        (["emails.*"], "emails.", True),
        (["emails.*"], "emailsXsend", False),
        (["emails.*"], "billing.emails.send", False),
        (["*"], "anything.at.all", True),
        (["send"], "send", True),
        (["send"], "sender", False),
        (["a?c"], "abc", False),  # only '*' is special
        (["[ab]"], "a", False),
        (["[ab]"], "[ab]", True),
        (["*.deliver", "x"], "webhooks.deliver", True),
        (["a*b*c"], "abc", True),
        (["a*b*c"], "axxbyyc", True),
        (["a*b*c"], "axxbyy", False),
        (["*a*b"], "xaxbab", True),
        (["**"], "x", True),
        (["a*"], "b", False),
        (["*a" * 10 + "b"], "a" * 200, False),
        ([], "send", False),
    ],
)
def test_name_patterns(patterns: list[str], name: str, expected: bool) -> None:
    assert name_matches(patterns, name) is expected


def test_allow_lists_load_from_the_tokens_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(
        json.dumps(
            [
                {"name": "ops", "token": OTHER, "scopes": ["admin"]},
                {
                    "name": "acme-mail",
                    "token": LIMITED_A,
                    "scopes": ["jobs:write"],
                    "tenant": "acme",
                    "enqueue": ["emails.*"],
                },
                {"name": "ci", "token": LIMITED_OPS, "scopes": ["jobs:write"], "enqueue": []},
            ]
        ),
        encoding="utf-8",
    )
    ops, mail, ci = load_tokens(path)
    assert ops.enqueue is None
    assert ops.may_enqueue("anything")
    assert mail.enqueue == ("emails.*",)
    assert mail.may_enqueue("emails.send")
    assert not mail.may_enqueue("billing.charge")
    assert ci.enqueue == ()  # an empty list allows nothing
    assert not ci.may_enqueue("anything")


@pytest.mark.parametrize(
    ("enqueue", "message"),
    [
        ("emails.*", "enqueue must be a list of job-name patterns or null"),
        ([1], "enqueue must be a list of job-name patterns or null"),
        ([""], "token 'x': enqueue: each pattern must be a job name of 1 to 200 characters"),
        (["a\nb"], "token 'x': enqueue: each pattern must be a job name"),
        (["a" * 201], "token 'x': enqueue: each pattern must be a job name"),
    ],
)
def test_bad_allow_lists_are_refused_with_the_token_named(enqueue: Any, message: str) -> None:
    config = [{"name": "x", "token": OTHER, "scopes": ["admin"], "enqueue": enqueue}]
    with pytest.raises(ValueError, match="enqueue") as info:
        parse_tokens(json.dumps(config))
    assert message in str(info.value)
    assert OTHER not in str(info.value)


def test_a_token_takes_one_pattern_as_a_string() -> None:
    token = Token(name="x", secret=OTHER, scopes={"admin"}, enqueue="emails.*")
    assert token.enqueue == ("emails.*",)
