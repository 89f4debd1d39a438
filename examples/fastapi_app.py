"""A FastAPI app that enqueues Dispatch jobs, composing its own lifespan with Dispatch's.

Run it (see docs/adapters/starlette.md)::

    uvicorn examples.fastapi_app:app

    curl -X POST localhost:8000/welcome -H 'content-type: application/json' \\
         -d '{"user_id": 1, "email": "a@example.com"}'
    curl localhost:8000/jobs/job_...

The store is ``$DISPATCH_URL``, else ``sqlite:///fastapi_app.db``. ``RUN_WORKER=0`` runs no
worker in the web process; run ``dispatch worker examples.fastapi_app:engine`` instead.

The admin API and dashboard are mounted at ``/dispatch`` (API under ``/dispatch/v1``); they
accept the tokens of ``$DISPATCH_ADMIN_TOKENS`` and refuse every request without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request

from dispatch_core import Engine, Job, JobContext, JobNotFoundError
from dispatch_plugins.admin import admin_app
from dispatch_starlette import dispatch_lifespan, get_dispatch

logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")

engine = Engine(os.environ.get("DISPATCH_URL", "sqlite:///fastapi_app.db"))


# One dataclass is both the request body FastAPI validates and the job's typed payload.
@dataclasses.dataclass(frozen=True)
class Welcome:
    user_id: int
    email: str


@dataclasses.dataclass(frozen=True)
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


@contextlib.asynccontextmanager
async def app_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    """The app's own lifespan: Dispatch's runs around it and merges its state."""
    yield {"started_at": datetime.now(UTC)}


app = FastAPI(
    title="Dispatch FastAPI example",
    lifespan=dispatch_lifespan(
        engine,
        run_worker=os.environ.get("RUN_WORKER", "1") != "0",
        worker_options={"concurrency": 20, "grace_period": 10.0},
        lifespan=app_lifespan,
    ),
)

# The operations surface: tokens come from $DISPATCH_ADMIN_TOKENS (none: every call refused).
app.mount("/dispatch", admin_app(engine))

DispatchEngine = Annotated[Engine, Depends(get_dispatch)]


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


@app.post("/welcome", status_code=202)
async def welcome(msg: Welcome) -> dict[str, Any]:
    return job_json(await send_welcome.aenqueue(msg))


@app.post("/reports", status_code=202)
async def report(req: Report) -> dict[str, Any]:
    return job_json(await build_report.aenqueue(req))


@app.get("/jobs/{job_id}")
async def job_state(job_id: str, dispatch: DispatchEngine) -> dict[str, Any]:
    try:
        return job_json(await dispatch.aget_job(job_id))
    except JobNotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc


@app.get("/health")
async def health(request: Request, dispatch: DispatchEngine) -> dict[str, Any]:
    started_at: datetime = request.state.started_at  # from app_lifespan's state
    return {
        "ok": True,
        "store": dispatch.url.split(":", 1)[0],
        "up_seconds": round((datetime.now(UTC) - started_at).total_seconds(), 3),
    }
