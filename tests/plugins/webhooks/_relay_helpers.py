"""Helpers of the relay tests: real HTTP receivers on 127.0.0.1 (threaded ``http.server``),
endpoints and relays wired to them, and ``settle`` to run an engine until every event is
delivered. The test modules put this directory on ``sys.path`` and import it."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from typing import Any

import attrs

from dispatch_core import Constant, Engine
from dispatch_plugins.webhooks import Endpoint, Relay, SignatureError, verify_signature

SECRET = "receiver-secret-0123456789"
#: Upper bound for a hanging receiver to hold a request: a failsafe, never reached in a pass.
_HANG_FAILSAFE = 10.0


@attrs.define
class Request:
    """What a receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    verified: str  # "ok", or why verification failed

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A webhook receiver on an ephemeral port of 127.0.0.1.

    Modes: ``ok`` verifies the signature with the public helper (401 when it fails), ``fail``
    answers 500 ``fail_times`` times then behaves as ``ok``, ``hang`` holds every request
    until the test ends, ``redirect`` answers 302 to ``location``.
    """

    def __init__(
        self,
        mode: str = "ok",
        *,
        secret: str = SECRET,
        fail_times: int = 1,
        location: str = "",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.mode = mode
        self.secret = secret
        self.fail_times = fail_times
        self.location = location
        self.requests: list[Request] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out and went away is expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        #: Server names clients asked for in TLS SNI.
        self.sni: list[str | None] = []
        if tls is not None:

            def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
                self.sni.append(name)

            tls.sni_callback = record_sni  # type: ignore[assignment]
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length", "0"))
        body = handler.rfile.read(length)
        headers = dict(handler.headers.items())
        try:
            verify_signature(secret=self.secret, body=body, headers=headers)
            verified = "ok"
        except SignatureError as exc:
            verified = str(exc)
        with self._lock:
            self.requests.append(Request(handler.path, headers, body, verified))
            count = len(self.requests)
        if self.mode == "hang":
            self.release.wait(_HANG_FAILSAFE)
            status = 200
        elif self.mode == "redirect":
            handler.send_response(302)
            handler.send_header("Location", self.location)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        elif self.mode == "fail" and count <= self.fail_times:
            status = 500
        else:
            status = 200 if verified == "ok" else 401
        payload = b"receiver body that must never be read or stored"
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The envelopes received, in order."""
        with self._lock:
            return [r.json for r in self.requests]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def endpoint(name: str, receiver: Receiver, **kwargs: Any) -> Endpoint:
    """An endpoint for a local receiver (``allow_private``, since it is on 127.0.0.1)."""
    options: dict[str, Any] = {"secret": receiver.secret, "allow_private": True, **kwargs}
    return Endpoint(name=name, url=receiver.url, **options)


def fast_relay(endpoints: list[Endpoint], **kwargs: Any) -> Relay:
    """A relay with tiny timeouts and no backoff, so failing deliveries finish fast."""
    options: dict[str, Any] = {
        "timeout": 2.0,
        "connect_timeout": 1.0,
        "max_retries": 2,
        "backoff": Constant(interval=0),
        **kwargs,
    }
    return Relay(endpoints, **options)


async def settle(engine: Engine, *, rounds: int = 20) -> None:
    """Run the engine's jobs and hooks until nothing is left: deliveries included."""
    for _ in range(rounds):
        await engine.hooks.flush()
        stats = await engine.drain(wait_scheduled=True, timeout=20)
        await engine.hooks.flush()
        if stats.processed == 0:
            return
    raise AssertionError(f"engine did not settle in {rounds} rounds")
