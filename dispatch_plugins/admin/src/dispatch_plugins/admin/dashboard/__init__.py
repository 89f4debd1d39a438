"""The web dashboard: one HTML page and its static assets, served by the admin app.

Plain HTML, CSS and JavaScript modules (no build step, no CDN). The page talks only to the
admin API at ``./v1/`` relative to where the app is mounted, so any mount prefix works.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["STATIC_DIR", "CONTENT_SECURITY_POLICY", "dashboard_routes"]

#: Where index.html, app.js, style.css and the page modules live (shipped in the wheel).
STATIC_DIR = Path(__file__).parent / "static"

#: Everything from the app's own origin, no inline script or style, no framing: the page
#: handles tokens, so an injected script must have nowhere to run and nowhere to send them.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

# The assets are not fingerprinted, so browsers revalidate them (cheaply, by ETag) on every load
# and a new version of the package is picked up at once.
_CACHE_CONTROL = "no-cache"

# Some systems map .js to text/plain in their mimetypes database, and browsers refuse to run
# an ES module served so: the types are set here rather than guessed.
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
}


class _Assets(StaticFiles):
    """StaticFiles with fixed media types, revalidation and the security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        media_type = _MEDIA_TYPES.get(Path(path).suffix)
        if media_type is not None and response.status_code == 200:
            response.headers["Content-Type"] = media_type
        response.headers["Cache-Control"] = _CACHE_CONTROL
        response.headers.update(_SECURITY_HEADERS)
        return response


async def _index(request: Request) -> Response:
    return FileResponse(
        STATIC_DIR / "index.html",
        media_type=_MEDIA_TYPES[".html"],
        headers={"Cache-Control": _CACHE_CONTROL, **_SECURITY_HEADERS},
    )


def dashboard_routes() -> list[BaseRoute]:
    """The dashboard's routes, relative to the admin app: ``/`` (the page) and ``/static``."""
    return [
        Route("/", _index, methods=["GET"], name="dashboard"),
        Mount("/static", app=_Assets(directory=STATIC_DIR), name="dashboard-static"),
    ]
