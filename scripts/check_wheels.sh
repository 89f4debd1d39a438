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

# dispatch-core + dispatch-sqlite + dispatch-admin, and dispatch-flask[admin]: the admin API,
# the dashboard's static files (package data), `dispatch serve` and the Flask mount.
python3 -m venv "$tmp/admin"
"$tmp/admin/bin/python" -m pip install --quiet --upgrade pip
"$tmp/admin/bin/python" -m pip install --quiet --find-links "$root/dist" \
  "$root"/dist/dispatch_core-*.whl "$root"/dist/dispatch_sqlite-*.whl \
  "$root"/dist/dispatch_admin-*.whl "$(ls "$root"/dist/dispatch_flask-*.whl)[admin]"
"$tmp/admin/bin/dispatch" serve --help >/dev/null
"$tmp/admin/bin/python" - <<'PY'
import asyncio
from importlib.metadata import entry_points

import httpx
from flask import Flask

from dispatch_core import Engine
from dispatch_flask import Dispatch
from dispatch_plugins.admin import Token, admin_app

eps = {ep.name for ep in entry_points(group="dispatch_core.plugins")}
assert eps == {"sqlite", "admin"}, eps
engine = Engine("sqlite:///admin.db")


@engine.job(name="admin.smoke")
def smoke(n: int) -> int:
    return n * 2


token = Token(name="ops", secret="wheel-check-secret-0123456789", scopes=frozenset({"admin"}))
auth = {"Authorization": f"Bearer {token.secret}"}


async def main() -> None:
    app = admin_app(engine, tokens=[token])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        made = await client.post("/v1/jobs", json={"name": "admin.smoke", "payload": 21}, headers=auth)
        assert made.status_code == 201, made.text
        await engine.drain()
        got = (await client.get(f"/v1/jobs/{made.json()['id']}", headers=auth)).json()
        assert got["result"] == 42, got
        assert (await client.get("/v1/jobs")).status_code == 401
        page = await client.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower(), page.status_code
        for asset in ("/static/app.js", "/static/style.css"):
            assert (await client.get(asset)).status_code == 200, asset
    await engine.aclose()


asyncio.run(main())

dispatch = Dispatch()
flask_app = Flask("wheelcheck")
flask_app.config["DISPATCH_URL"] = "sqlite:///flask-admin.db"
dispatch.init_app(flask_app)
dispatch.mount_admin(flask_app, tokens=[token])
with flask_app.test_client().get("/dispatch/v1/health/live") as reply:
    assert reply.status_code == 200, reply.status_code
with flask_app.test_client().get("/dispatch/v1/jobs") as reply:
    assert reply.status_code == 401, reply.status_code
dispatch.get_engine(flask_app).close()
print("wheel check ok: dispatch-admin (API, dashboard files, serve) and dispatch-flask[admin]")
PY

# dispatch-core + dispatch-sqlite + dispatch-otel + dispatch-webhooks: both found by entry point;
# the relay, configured by file, delivers a signed webhook to a real local receiver; the OTel
# default runs on the API alone (no SDK in this venv, as its wheel declares).
python3 -m venv "$tmp/observe"
"$tmp/observe/bin/python" -m pip install --quiet --upgrade pip
"$tmp/observe/bin/python" -m pip install --quiet "$root"/dist/dispatch_core-*.whl \
  "$root"/dist/dispatch_sqlite-*.whl "$root"/dist/dispatch_otel-*.whl \
  "$root"/dist/dispatch_webhooks-*.whl
"$tmp/observe/bin/python" - <<'PY'
import asyncio
import http.server
import importlib.util
import json
import os
import threading
from importlib.metadata import entry_points

got: list[tuple[dict[str, str], bytes]] = []


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        got.append((dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=server.serve_forever, daemon=True).start()
secret = "wheel-check-webhook-secret"
with open("webhooks.json", "w") as f:
    json.dump(
        {
            "endpoints": [
                {
                    "name": "local",
                    "url": f"http://127.0.0.1:{server.server_port}/hooks",
                    "secret": secret,
                    "events": ["dispatch.job.completed"],
                    "allow_private": True,
                }
            ]
        },
        f,
    )
os.environ["DISPATCH_WEBHOOKS_CONFIG"] = "webhooks.json"

from dispatch_core import Engine
from dispatch_plugins.webhooks import verify_signature

eps = {ep.name for ep in entry_points(group="dispatch_core.plugins")}
assert eps == {"sqlite", "otel", "webhooks"}, eps
assert importlib.util.find_spec("opentelemetry.sdk") is None, "the SDK must not be required"
engine = Engine("sqlite:///observe.db")
names = {name for name, _ in engine.pm.list_name_plugin()}
assert {"otel", "webhooks"} <= names, names


@engine.job(name="observe.smoke")
async def smoke(n: int) -> int:
    return n + 1


async def main() -> None:
    job = await smoke.aenqueue(41)
    await engine.drain()  # runs the job
    await engine.hooks.flush()  # the completed event queues its delivery job
    await engine.drain()  # delivers it
    assert (await engine.aget_job(job.id)).result == 42
    await engine.aclose()


asyncio.run(main())
server.shutdown()
assert len(got) == 1, got
headers, body = got[0]
verify_signature(secret=secret, body=body, headers=headers)
event = json.loads(body)
assert event["type"] == "dispatch.job.completed" and event["data"]["job_name"] == "observe.smoke"
print("wheel check ok: dispatch-otel and dispatch-webhooks (entry points, signed delivery)")
PY

# dispatch-core + dispatch-redis: the Redis store from its wheel.
fresh_venv redis dispatch_redis
"$tmp/redis/bin/python" - <<'PY'
import asyncio
import importlib.metadata as md
import os
import uuid

from dispatch_core import Engine

eps = {ep.name for ep in md.entry_points(group="dispatch_core.plugins")}
assert eps == {"redis"}, eps
url = os.environ.get("DISPATCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
prefix = f"wheelcheck{uuid.uuid4().hex[:8]}"
engine = Engine(f"{url}?prefix={prefix}")


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
        import redis

        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


asyncio.run(main())
print("wheel check ok: dispatch-core + dispatch-redis")
PY
