"""A Starlette app that enqueues Dispatch jobs and runs a worker in its own process.

Run it (see docs/adapters/starlette.md)::

    uvicorn examples.starlette_app:app

    curl -X POST localhost:8000/welcome -d '{"user_id": 1, "email": "a@example.com"}'
    curl localhost:8000/jobs/job_...

The store is ``$DISPATCH_URL``, else ``sqlite:///starlette_app.db``. Set ``RUN_WORKER=0`` to
run no worker in the web process, and ``dispatch worker examples.starlette_app:engine``
beside it instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import attrs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dispatch_core import Engine, Job, JobContext, JobDefinition, JobNotFoundError, PayloadError
from dispatch_starlette import dispatch_lifespan, get_dispatch

# Show Dispatch's log lines (worker started / stopped...) beside uvicorn's.
logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")

engine = Engine(os.environ.get("DISPATCH_URL", "sqlite:///starlette_app.db"))


@attrs.frozen
class Welcome:
    user_id: int
    email: str


@attrs.frozen
class Report:
    account_id: int
    pages: int


@engine.job(name="example.send_welcome", queue="emails", max_retries=5, timeout=30)
async def send_welcome(ctx: JobContext, msg: Welcome) -> dict[str, str]:
    """Send a welcome e-mail (pretend)."""
    ctx.log.info("sending welcome to %s", msg.email)
    await asyncio.sleep(0.01)  # the mail API call
    return {"sent_to": msg.email}


@engine.job(name="example.build_report", queue="reports", timeout=120)
async def build_report(ctx: JobContext, req: Report) -> dict[str, int]:
    """Render a report, a fifth of a second per page (pretend): long enough to see it run."""
    for _ in range(req.pages):
        await asyncio.sleep(0.2)
    return {"account_id": req.account_id, "pages": req.pages}


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "queue": job.queue,
        "state": job.state.value,
        "attempt": job.attempt,
        "result": job.result,
        "last_error": job.last_error,
    }


async def enqueue_from_body(request: Request, definition: JobDefinition[Any]) -> JSONResponse:
    """Enqueue ``definition`` with the request's JSON body as its payload: 202 and the job.

    The body is checked against the job's payload type at enqueue; nothing is written if it
    does not fit, and the 422 names the field (``required field missing @ $.email``).
    """
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": "the body is not JSON"}, status_code=400)
    try:
        job = await definition.aenqueue(body)
    except PayloadError as exc:
        return JSONResponse({"error": str(exc)}, status_code=422)
    return JSONResponse(job_json(job), status_code=202)


async def welcome(request: Request) -> JSONResponse:
    return await enqueue_from_body(request, send_welcome)


async def report(request: Request) -> JSONResponse:
    return await enqueue_from_body(request, build_report)


async def job_state(request: Request) -> JSONResponse:
    dispatch = get_dispatch(request)  # the engine the lifespan opened
    try:
        job = await dispatch.aget_job(request.path_params["job_id"])
    except JobNotFoundError as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    return JSONResponse(job_json(job))


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True, "store": get_dispatch(request).url.split(":", 1)[0]})


app = Starlette(
    routes=[
        Route("/welcome", welcome, methods=["POST"]),
        Route("/reports", report, methods=["POST"]),
        Route("/jobs/{job_id}", job_state),
        Route("/health", health),
    ],
    lifespan=dispatch_lifespan(engine, run_worker=os.environ.get("RUN_WORKER", "1") != "0"),
)
