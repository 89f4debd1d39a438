"""A Flask app that enqueues Dispatch jobs from its views (see docs/adapters/flask.md).

From the repository root::

    flask --app examples.flask_app run                  # the web app on http://127.0.0.1:5000
    flask --app examples.flask_app dispatch worker      # a worker for its jobs

``POST /signups`` with ``{"user_id": 1, "email": "a@example.com"}`` enqueues two jobs and
answers 202 with their ids; ``GET /jobs/<id>`` shows a job's state and result. The store is
``$DISPATCH_URL``, else ``sqlite:///flask_example.db`` in the current directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import attrs
from flask import Blueprint, Flask, current_app, g, request, url_for
from flask.typing import ResponseReturnValue

from dispatch_core import Job, JobContext, JobNotFoundError, PayloadError
from dispatch_flask import Dispatch

# The extension exists before any app: jobs are declared on it at import time, and each app
# made by create_app() gets its own engine with these jobs.
dispatch = Dispatch()


@attrs.frozen
class Welcome:
    user_id: int
    email: str


@dispatch.job(name="example.send_welcome", queue="emails", max_retries=3, timeout=10)
async def send_welcome(ctx: JobContext, msg: Welcome) -> dict[str, str]:
    """An async job: it runs inside app.app_context(), so it can read the app's config."""
    sender = current_app.config["WELCOME_SENDER"]
    ctx.log.info("welcome mail from %s to %s", sender, msg.email)
    return {"from": sender, "to": msg.email}


@dispatch.job(name="example.audit_signup", timeout=10)
def audit_signup(user_id: int) -> dict[str, Any]:
    """A sync job (run in the worker's thread pool), with the app context and its own g."""
    g.audited = user_id
    return {"app": current_app.name, "user_id": g.audited}


bp = Blueprint("signups", __name__)


@bp.post("/signups")
def create_signup() -> ResponseReturnValue:
    """Enqueue the welcome mail and the audit; the payload is checked at enqueue."""
    body: Any = request.get_json(silent=True)
    try:
        welcome = send_welcome.enqueue(body)
    except PayloadError as exc:  # a body that does not fit Welcome: nothing was written
        return {"error": str(exc)}, 400
    audit = audit_signup.enqueue(welcome.payload["user_id"])
    location = url_for("signups.show_job", job_id=welcome.id)
    return {"job_id": welcome.id, "audit_job_id": audit.id}, 202, {"Location": location}


@bp.get("/jobs/<job_id>")
def show_job(job_id: str) -> ResponseReturnValue:
    """A job's state, attempts, result and last error."""
    try:
        job = dispatch.engine.get_job(job_id)
    except JobNotFoundError:
        return {"error": f"no job {job_id}"}, 404
    return _job_json(job), 200


def _job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "queue": job.queue,
        "state": job.state.value,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "result": job.result,
        "last_error": job.last_error,
    }


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app factory (``flask --app examples.flask_app`` finds it by name)."""
    app = Flask(__name__)
    app.config.from_mapping(
        DISPATCH_URL=os.environ.get("DISPATCH_URL", "sqlite:///flask_example.db"),
        DISPATCH_WORKER_CONCURRENCY=4,
        WELCOME_SENDER="welcome@example.com",
    )
    if config:
        app.config.update(config)
    dispatch.init_app(app)
    # The admin API and dashboard at /dispatch, for the tokens of $DISPATCH_ADMIN_TOKENS.
    dispatch.mount_admin(app)
    app.register_blueprint(bp)
    return app
