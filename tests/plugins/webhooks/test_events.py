"""Every event of the catalogue, driven by real jobs, workflows and a cron trigger, delivered
with its payload fields, and no job payload, result or workflow input in any of them."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dispatch_core import Constant, Engine, Workflow
from dispatch_plugins.webhooks import CATALOG_VERSION, EVENT_TYPES

sys.path.insert(0, str(Path(__file__).parent))

from _relay_helpers import Receiver, endpoint, fast_relay, settle

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
PII = "alice@example.com"  # in payloads, results and workflow inputs: must never be sent

JOB_FIELDS = {"job_id", "job_name", "queue", "tenant", "attempt"}
RUN_FIELDS = {"run_id", "name", "version", "tenant"}
FIELDS = {
    "dispatch.job.enqueued": JOB_FIELDS,
    "dispatch.job.started": JOB_FIELDS,
    "dispatch.job.completed": JOB_FIELDS | {"elapsed_ms"},
    "dispatch.job.failed": JOB_FIELDS | {"error"},
    "dispatch.job.retrying": JOB_FIELDS | {"error", "next_run_at"},
    "dispatch.job.dlq": JOB_FIELDS | {"error"},
    "dispatch.workflow.started": RUN_FIELDS,
    "dispatch.workflow.step_completed": RUN_FIELDS | {"step_name", "elapsed_ms"},
    "dispatch.workflow.step_failed": RUN_FIELDS | {"step_name", "error"},
    "dispatch.workflow.completed": RUN_FIELDS | {"elapsed_ms"},
    "dispatch.workflow.failed": RUN_FIELDS | {"error"},
    "dispatch.cron.fired": {"entry_name", "job_id"},
}


def by_type(receiver: Receiver) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for event in receiver.events:
        out.setdefault(event["type"], []).append(event)
    return out


async def test_every_event_type_is_delivered_with_its_fields(
    receiver: Receiver, make_engine: Callable[..., Engine]
) -> None:
    engine = make_engine(fast_relay([endpoint("all", receiver)]))
    flaky_calls: list[int] = []

    @engine.job(name="app.send", queue="mail")
    async def send(to: str) -> dict[str, str]:
        return {"sent": to}

    @engine.job(name="app.flaky", max_retries=1, backoff=Constant(interval=0))
    async def flaky(to: str) -> None:
        flaky_calls.append(1)
        if len(flaky_calls) == 1:
            raise ConnectionError("smtp down\nTraceback line that stays home")

    @engine.job(name="app.doomed", max_retries=0)
    async def doomed(to: str) -> None:
        raise ValueError("no such mailbox")

    @engine.job(name="app.report")
    async def report() -> None: ...

    @engine.workflow(name="app.signup")
    async def signup(wf: Workflow, email: str) -> str:
        await wf.step("welcome", lambda: f"welcomed {email}")
        return email

    @engine.workflow(name="app.billing", version=3)
    async def billing(wf: Workflow, email: str) -> None:
        await wf.step("reserve", lambda: 1)
        await wf.step("charge", _decline)

    engine.schedule("nightly", "0 3 * * *", report)
    await engine.apply_schedules()

    sent = await send.aenqueue(PII, tenant="acme")
    retried = await flaky.aenqueue(PII)
    dead = await doomed.aenqueue(PII)
    ok_run = await signup.astart(PII, tenant="acme")
    bad_run = await billing.astart(PII)
    cron_job = await engine.atrigger_cron("nightly")
    await settle(engine)

    events = by_type(receiver)
    assert set(events) == set(EVENT_TYPES)
    for request in receiver.requests:
        assert request.verified == "ok"
        assert PII not in request.body.decode()
        assert "Traceback" not in request.body.decode()
    ids = [e["id"] for e in receiver.events]
    assert len(ids) == len(set(ids))
    for event_type, group in events.items():
        for event in group:
            assert set(event["data"]) == FIELDS[event_type], event_type
            assert event["catalog_version"] == CATALOG_VERSION
            assert RFC3339.fullmatch(event["created_at"])
            if "tenant" in event["data"]:
                assert event["tenant"] == event["data"]["tenant"]

    def job_events(event_type: str, job_id: str) -> list[dict[str, Any]]:
        return [e["data"] for e in events[event_type] if e["data"]["job_id"] == job_id]

    [completed] = job_events("dispatch.job.completed", sent.id)
    assert completed["job_name"] == "app.send"
    assert completed["queue"] == "mail"
    assert completed["tenant"] == "acme"
    assert completed["attempt"] == 1
    assert isinstance(completed["elapsed_ms"], int)
    [enqueued] = job_events("dispatch.job.enqueued", sent.id)
    assert enqueued["attempt"] == 0
    [started] = job_events("dispatch.job.started", sent.id)
    assert started["attempt"] == 1

    [retrying] = job_events("dispatch.job.retrying", retried.id)
    assert retrying["attempt"] == 1
    assert retrying["error"].startswith("ConnectionError: smtp down")
    assert RFC3339.fullmatch(retrying["next_run_at"])
    assert len(job_events("dispatch.job.completed", retried.id)) == 1

    [failed] = job_events("dispatch.job.failed", dead.id)
    [dlq] = job_events("dispatch.job.dlq", dead.id)
    assert failed["error"] == dlq["error"] == "ValueError: no such mailbox"
    assert failed["tenant"] is None

    def run_events(event_type: str, run_id: str) -> list[dict[str, Any]]:
        return [e["data"] for e in events[event_type] if e["data"]["run_id"] == run_id]

    [run_started] = run_events("dispatch.workflow.started", ok_run.id)
    assert run_started == {
        "run_id": ok_run.id,
        "name": "app.signup",
        "version": 1,
        "tenant": "acme",
    }
    [step] = run_events("dispatch.workflow.step_completed", ok_run.id)
    assert step["step_name"] == "welcome"
    assert len(run_events("dispatch.workflow.completed", ok_run.id)) == 1
    [step_failed] = run_events("dispatch.workflow.step_failed", bad_run.id)
    assert step_failed["step_name"] == "charge"
    assert "card declined" in step_failed["error"]
    [run_failed] = run_events("dispatch.workflow.failed", bad_run.id)
    assert run_failed["version"] == 3
    assert run_failed["tenant"] is None
    assert [s["step_name"] for s in run_events("dispatch.workflow.step_completed", bad_run.id)] == [
        "reserve"
    ]

    [fired] = events["dispatch.cron.fired"]
    assert fired["data"] == {"entry_name": "nightly", "job_id": cron_job.id}
    assert fired["tenant"] is None

    # workflow driver jobs and the deliveries themselves produce no job events
    names = {e["data"].get("job_name") for e in receiver.events}
    assert names == {None, "app.send", "app.flaky", "app.doomed", "app.report"}


def _decline() -> None:
    raise RuntimeError("card declined")
