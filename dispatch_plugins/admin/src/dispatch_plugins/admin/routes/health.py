"""Health probes (no token needed): ``/v1/health/live`` and ``/v1/health/ready``."""

from __future__ import annotations

import asyncio
import logging

from starlette.responses import Response

from dispatch_plugins.admin.errors import ApiError
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
    """The store answers a cheap query within two seconds; else 503 ``store_unavailable``."""
    try:
        await asyncio.wait_for(call.engine.aleader(), timeout=READY_TIMEOUT)
    except Exception as exc:  # any failure means "not ready"; the log says which
        log.warning("admin API: readiness check failed: %r", exc)
        reason = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
        raise ApiError(503, "store_unavailable", f"the store is not ready: {reason}") from None
    return json_response({"status": "ok", "store": "ok"})
