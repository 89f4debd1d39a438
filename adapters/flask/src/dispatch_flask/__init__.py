"""Flask extension for Dispatch: configure from app.config, enqueue from views, run jobs in
the app context, ``flask dispatch`` commands.

::

    dispatch = Dispatch()

    @dispatch.job(queue="emails")
    async def send_welcome(msg: Welcome) -> None: ...

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["DISPATCH_URL"] = "sqlite:///jobs.db"
        dispatch.init_app(app)
        return app

See ``docs/adapters/flask.md``.
"""

from __future__ import annotations

from dispatch_flask.cli import dispatch_cli
from dispatch_flask.config import DEFAULTS, DispatchConfig, WorkerSettings
from dispatch_flask.extension import EXTENSION_KEY, Dispatch, FlaskJobDecorator
from dispatch_flask.jobs import FlaskJob
from dispatch_flask.middleware import app_context_middleware

__all__ = [
    "Dispatch",
    "FlaskJob",
    "FlaskJobDecorator",
    "DispatchConfig",
    "WorkerSettings",
    "DEFAULTS",
    "EXTENSION_KEY",
    "app_context_middleware",
    "dispatch_cli",
]
