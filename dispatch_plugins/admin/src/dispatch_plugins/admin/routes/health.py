"""Health probes (no token needed): ``/v1/health/live`` and ``/v1/health/ready``.

They answer anyone, so they say nothing of the deployment: a failed readiness check answers a
fixed text and the exception's class name, and logs the error itself (store URLs redacted).
"""

from __future__ import annotations

import asyncio
import logging

from starlette.responses import Response

from dispatch_plugins.admin.errors import ApiError, redact_urls
from dispatch_plugins.admin.routes._base import Call, Endpoints, json_response

__all__ = ["endpoints", "READY_TIMEOUT"]

log = logging.getLogger("dispatch_plugins.admin")
endpoints = Endpoints()

#: Seconds the readiness probe waits for the store.
READY_TIMEOUT = 2.0


@endpoints.get("/health/live", None)
async def health_live(call: Call) -> Response:
    """The process serves requests."""
    return json_response({"status": "ok"})


@endpoints.get("/health/ready", None)
async def health_ready(call: Call) -> Response:
    """The store answers a cheap query within two seconds; else 503 ``store_unavailable``
    with a fixed message and the exception's class name (never the error's text, which can
    name the store's user, host and database: this route needs no token)."""
    try:
        await asyncio.wait_for(call.engine.aleader(), timeout=READY_TIMEOUT)
    except Exception as exc:  # any failure means "not ready"; the log says which
        reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
        log.warning(
            "admin API: readiness check failed: %s: %s",
            type(exc).__name__,
            redact_urls(str(exc)) or "(no message)",
        )
        raise ApiError(
            503,
            "store_unavailable",
            f"the store is not ready ({reason}); the server log has the details",
        ) from None
    return json_response({"status": "ok", "store": "ok"})
