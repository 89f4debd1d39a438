"""dispatch-admin on SQLite: the API, the dashboard's files (package data), `dispatch serve`."""

from __future__ import annotations

import asyncio
from importlib.metadata import entry_points

import httpx

from dispatch_core import Engine
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
        made = await client.post(
            "/v1/jobs", json={"name": "admin.smoke", "payload": 21}, headers=auth
        )
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
print("install check ok: dispatch-admin (API, dashboard files)")
