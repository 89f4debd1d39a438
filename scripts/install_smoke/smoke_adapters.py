"""The three framework adapters on SQLite: each declares what it imports."""

from __future__ import annotations

import asyncio

from flask import Flask
from starlette.applications import Starlette

import dispatch_celery
from dispatch_core import Engine
from dispatch_flask import Dispatch
from dispatch_starlette import dispatch_lifespan

# Flask: an app factory, a job declared before the app, a sync enqueue, a drain.
dispatch = Dispatch()


@dispatch.job(name="flask.smoke")
def flask_smoke(n: int) -> int:
    return n + 1


app = Flask("wheelcheck")
app.config["DISPATCH_URL"] = "sqlite:///flask.db"
dispatch.init_app(app)
with app.app_context():
    job = flask_smoke.enqueue(41)
    engine = app.extensions["dispatch"].engine
asyncio.run(engine.drain())
assert engine.get_job(job.id).result == 42
engine.close()

# Starlette: the lifespan opens the engine and yields it as state.
star_engine = Engine("sqlite:///starlette.db")


async def lifespan_check() -> None:
    star = Starlette(lifespan=dispatch_lifespan(star_engine))
    async with star.router.lifespan_context(star) as state:
        assert state["dispatch"] is star_engine


asyncio.run(lifespan_check())

# Celery-style: a task defined and called as in Celery's tutorial, run by a drain.
celery_app = dispatch_celery.Celery("wheelcheck", broker="sqlite:///celery.db")


@celery_app.task
def add(x, y):  # type: ignore[no-untyped-def]
    return x + y


result = add.delay(2, 3)
asyncio.run(celery_app.engine.drain())
assert result.get(timeout=5) == 5, result.state
print("install check ok: dispatch-flask, dispatch-starlette, dispatch-celery")
