"""dispatch-flask[admin] on SQLite: the admin API mounted in a Flask app."""

from __future__ import annotations

import asyncio

from flask import Flask

from dispatch_flask import Dispatch
from dispatch_plugins.admin import Token

token = Token(name="ops", secret="wheel-check-secret-0123456789", scopes=frozenset({"admin"}))
auth = {"Authorization": f"Bearer {token.secret}"}
dispatch = Dispatch()


@dispatch.job(name="flask.admin.smoke")
def smoke(n: int) -> int:
    return n * 3


flask_app = Flask("wheelcheck")
flask_app.config["DISPATCH_URL"] = "sqlite:///flask-admin.db"
dispatch.init_app(flask_app)
dispatch.mount_admin(flask_app, tokens=[token])
with flask_app.test_client().get("/dispatch/v1/health/live") as reply:
    assert reply.status_code == 200, reply.status_code
with flask_app.test_client().get("/dispatch/v1/jobs") as reply:
    assert reply.status_code == 401, reply.status_code
client = flask_app.test_client()
made = client.post(
    "/dispatch/v1/jobs", json={"name": "flask.admin.smoke", "payload": 14}, headers=auth
)
assert made.status_code == 201, made.text
engine = dispatch.get_engine(flask_app)
asyncio.run(engine.drain())
got = client.get(f"/dispatch/v1/jobs/{made.json['id']}", headers=auth).json
assert got["result"] == 42, got
dispatch.get_engine(flask_app).close()
print("install check ok: dispatch-flask[admin]")
