"""A small application with Dispatch jobs, used by ``make demo`` and the end-to-end tests.

Run a worker for it with ``dispatch worker examples.demo_app:engine``.
"""

from __future__ import annotations

import os
import pathlib
import time

import attrs

from dispatch_core import Constant, Engine, JobContext, Workflow

#: The demo's database, written by ``make demo`` and shown by ``make serve``: .demo/demo.db at
#: the repository's root (or in $DEMO_DIR), wherever the command runs from.
DEMO_DB = pathlib.Path(
    os.environ.get("DEMO_DIR") or pathlib.Path(__file__).resolve().parent.parent / ".demo"
).joinpath("demo.db")

#: The store: $DISPATCH_URL, else the demo's database.
engine = Engine(os.environ.get("DISPATCH_URL") or f"sqlite:///{DEMO_DB}")

# At most 4 thumbnails at once in the whole cluster, however many workers run.
engine.queue("images", concurrency=4)


@attrs.frozen
class Welcome:
    user_id: int
    email: str


@attrs.frozen
class Charge:
    order_id: int
    cents: int


@engine.job(name="demo.send_welcome", queue="emails", max_retries=3, timeout=10)
async def send_welcome(ctx: JobContext, msg: Welcome) -> dict[str, str]:
    """An async job with a typed payload."""
    ctx.log.debug("sending welcome", extra={"to": msg.email})
    return {"sent_to": msg.email}


@engine.job(name="demo.make_thumbnail", queue="images", timeout=10)
def make_thumbnail(path: str) -> int:
    """A plain (sync) job: it runs in the worker's thread pool."""
    time.sleep(0.002)  # pretend to decode an image
    return len(path)


@engine.job(name="demo.charge_card", max_retries=4, backoff=Constant(interval=0.2))
async def charge_card(ctx: JobContext, charge: Charge) -> str:
    """Fails its first two attempts (a flaky payment gateway), then succeeds."""
    if ctx.attempt <= 2:
        raise ConnectionError(f"gateway timeout on attempt {ctx.attempt}")
    return f"charged order {charge.order_id}"


@engine.job(name="demo.call_webhook", max_retries=2, backoff=Constant(interval=0.2))
async def call_webhook(url: str) -> None:
    """Always fails: after its retries it lands in the dead-letter queue."""
    raise RuntimeError(f"POST {url} -> 503 Service Unavailable")


@engine.cron("*/2 * * * * *", name="demo.report", queue="maintenance")
async def report(ctx: JobContext) -> str:
    """Runs every two seconds (six fields: seconds first), fired by the leader only."""
    return f"report for tick {ctx.job.headers.get('dispatch-cron-tick')}"


def _send_tips(email: str) -> str:
    return f"tips sent to {email}"


@engine.workflow(name="demo.onboard", queue="workflows")
async def onboard(wf: Workflow, user: Welcome) -> dict[str, str]:
    """A durable workflow: a step, a durable one-second timer, a wait for an outside event
    (the user clicking the activation link), another step. Each is checkpointed."""
    sent = await wf.step("welcome", lambda: f"welcome sent to {user.email}")
    await wf.sleep("cool-off", 1.0)
    activation = await wf.wait_for_event("activated", timeout=60)
    tips = await wf.step("tips", _send_tips, user.email)
    return {"welcome": sent, "activated_at": activation["at"], "tips": tips}
