"""dispatch-otel + dispatch-webhooks on SQLite: both found by entry point; the webhooks
plugin, configured by file, delivers a signed webhook to a real local receiver; the OTel default
runs on the API alone (no SDK in this venv, as its wheel declares)."""

from __future__ import annotations

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
print("install check ok: dispatch-otel and dispatch-webhooks (entry points, signed delivery)")
