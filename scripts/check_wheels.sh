#!/usr/bin/env bash
# Proves `pip install dispatch-core dispatch-sqlite` and `pip install dispatch-core
# dispatch-postgres` work from the built wheels alone: a missing dependency declaration fails
# here, where an editable dev install would hide it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fresh_venv() {
  python3 -m venv "$tmp/$1"
  "$tmp/$1/bin/python" -m pip install --quiet --upgrade pip
  "$tmp/$1/bin/python" -m pip install --quiet "$root"/dist/dispatch_core-*.whl "$root"/dist/"$2"-*.whl
}

# dispatch-core + dispatch-sqlite: the embedded default.
fresh_venv sqlite dispatch_sqlite
cd "$tmp"
"$tmp/sqlite/bin/python" - <<'PY'
import asyncio
import importlib.metadata as md

import dispatch_core
import dispatch_plugins.sqlite
from dispatch_core import Engine

eps = {ep.name for ep in md.entry_points(group="dispatch_core.plugins")}
assert eps == {"sqlite"}, eps
engine = Engine()  # the embedded default: sqlite:///dispatch.db
assert engine.url == "sqlite:///dispatch.db", engine.url


@engine.job(name="smoke")
async def smoke(n: int) -> int:
    return n + 1


async def main() -> None:
    job = await smoke.aenqueue(41)
    await engine.drain()
    assert (await engine.aget_job(job.id)).result == 42
    await engine.aclose()


asyncio.run(main())
print("wheel check ok: dispatch-core + dispatch-sqlite", dispatch_core.__version__)
PY
"$tmp/sqlite/bin/dispatch" --help >/dev/null
echo "dispatch CLI from the wheel: ok"

# dispatch-core + dispatch-postgres: what production users install.
fresh_venv postgres dispatch_postgres
"$tmp/postgres/bin/python" - <<'PY'
import asyncio
import importlib.metadata as md
import os
import uuid

import psycopg

import dispatch_plugins.postgres
from dispatch_core import Engine

eps = {ep.name for ep in md.entry_points(group="dispatch_core.plugins")}
assert eps == {"postgres"}, eps
assert psycopg.pq.__impl__ in ("binary", "c"), psycopg.pq.__impl__
dsn = os.environ.get("DISPATCH_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
schema = f"wheelcheck_{uuid.uuid4().hex[:8]}"
engine = Engine(f"{dsn}?schema={schema}")


@engine.job(name="smoke")
async def smoke(n: int) -> int:
    return n + 1


async def main() -> None:
    try:
        job = await smoke.aenqueue(41)
        await engine.drain()
        assert (await engine.aget_job(job.id)).result == 42
    finally:
        await engine.aclose()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


asyncio.run(main())
print("wheel check ok: dispatch-core + dispatch-postgres")
PY

# dispatch-core + dispatch-sqlite + the three adapters: each adapter declares what it imports.
python3 -m venv "$tmp/adapters"
"$tmp/adapters/bin/python" -m pip install --quiet --upgrade pip
"$tmp/adapters/bin/python" -m pip install --quiet "$root"/dist/dispatch_core-*.whl \
  "$root"/dist/dispatch_sqlite-*.whl "$root"/dist/dispatch_flask-*.whl \
  "$root"/dist/dispatch_starlette-*.whl "$root"/dist/dispatch_celery-*.whl
"$tmp/adapters/bin/python" - <<'PY'
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
print("wheel check ok: dispatch-flask, dispatch-starlette, dispatch-celery")
PY
