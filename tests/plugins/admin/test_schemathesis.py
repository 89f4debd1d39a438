"""Fuzz the real app with Schemathesis, in process (ASGI): for every operation of the OpenAPI
document, generated requests (valid ones and, in the coverage phase, invalid ones) must never
get a server error, and every response must have a documented status and match the documented
schema.

The app serves an engine on the memory store with jobs, dead letters and runs of two tenants,
and the requests carry an operator token with every scope, so the fuzzer reaches the routes'
code and not only the 401 in front of them. The number of examples is bounded so that the
module runs in well under a minute.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from dispatch_core import Engine, Workflow, tenant_scope
from dispatch_plugins.admin.app import admin_app
from dispatch_plugins.admin.auth import Token

SECRET = "fuzzer-secret-0123456789"


def _engine() -> Engine:
    engine = Engine("memory://")

    @engine.job(name="send", max_retries=0)
    async def send(n: int) -> int:
        return n

    @engine.job(name="boom", max_retries=0)
    async def boom() -> None:
        raise RuntimeError("boom")

    @engine.workflow(name="order")
    async def order(wf: Workflow, amount: int) -> int:
        return int(await wf.step("charge", lambda: amount * 2))

    engine.schedule("nightly", "0 3 * * *", "boom")
    return engine


async def _populate(engine: Engine) -> None:
    for tenant in ("A", "B", None):
        with tenant_scope(tenant):
            await engine.aenqueue("boom")
            await engine.aenqueue("send", 1, delay=3600)
            await engine.workflows["order"].astart(1)
    await engine.apply_schedules()
    await engine.drain()


ENGINE = _engine()
# The data is made in a thread of its own: collection may already run inside an event loop.
_thread = threading.Thread(target=lambda: asyncio.run(_populate(ENGINE)))
_thread.start()
_thread.join()
APP = admin_app(
    ENGINE,
    tokens=[Token(name="fuzzer", secret=SECRET, scopes=frozenset({"admin"}))],
    dashboard=False,
)
schema = schemathesis.openapi.from_asgi("/v1/openapi.json", APP)


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_the_api_holds_up_under_fuzzing(case: Any) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {SECRET}"},
        checks=[not_a_server_error, response_schema_conformance, status_code_conformance],
    )
