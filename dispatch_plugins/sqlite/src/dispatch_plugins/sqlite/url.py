"""Parse ``sqlite://`` store URLs.

``sqlite:///jobs.db`` is relative to the current directory (resolved when the URL is parsed, so a
later ``chdir`` does not move the database); ``sqlite:////var/lib/app/jobs.db`` is absolute.
Query parameters tune the store:

* ``busy_timeout`` -- milliseconds a writer waits for another process's write lock
  (default 5000).
* ``poll_interval`` -- seconds between two looks at ``PRAGMA data_version`` by the change
  watcher of :meth:`SQLiteStore.listen` while the database is busy (default 0.001).
* ``idle_poll_interval`` -- the longest gap between two looks once nothing has changed for a
  second (default 0.005); set it equal to ``poll_interval`` to poll at one constant rate.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs

from dispatch_core.errors import StoreURLError

__all__ = [
    "SQLiteURL",
    "parse_url",
    "DEFAULT_BUSY_TIMEOUT_MS",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_IDLE_POLL_INTERVAL",
]

DEFAULT_BUSY_TIMEOUT_MS = 5000
DEFAULT_POLL_INTERVAL = 0.001
DEFAULT_IDLE_POLL_INTERVAL = 0.005

_KNOWN_PARAMS = ("busy_timeout", "poll_interval", "idle_poll_interval")


@attrs.frozen
class SQLiteURL:
    """A parsed ``sqlite://`` URL."""

    #: Absolute path of the database file.
    path: str
    #: Milliseconds to wait for a lock held by another connection before failing.
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
    #: Seconds between two ``PRAGMA data_version`` reads of the change watcher (busy).
    poll_interval: float = DEFAULT_POLL_INTERVAL
    #: The longest gap between two reads once the database has been quiet for a second.
    idle_poll_interval: float = DEFAULT_IDLE_POLL_INTERVAL


def parse_url(url: str) -> SQLiteURL:
    """Parse a ``sqlite://`` URL.

    Args:
        url: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``, optionally with
            ``?busy_timeout=MS&poll_interval=SECONDS&idle_poll_interval=SECONDS``.

    Returns:
        The database path (made absolute) and the tuning parameters.

    Raises:
        StoreURLError: the URL is not a ``sqlite://`` URL, names a host, has no path, asks for
            an in-memory database, or has an unknown or malformed query parameter.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite" or not url.lower().startswith("sqlite://"):
        raise StoreURLError(
            f"not a SQLite store URL: {url!r}; expected sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    if parts.netloc:
        raise StoreURLError(
            f"SQLite store URL {url!r} names a host ({parts.netloc!r}); a SQLite database is a "
            "local file: use three slashes for a relative path (sqlite:///jobs.db) "
            "or four for an absolute one (sqlite:////var/lib/app/jobs.db)"
        )
    # urlsplit keeps the slash that separates the (empty) host from the path; drop it.
    raw = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if not raw:
        raise StoreURLError(
            f"SQLite store URL {url!r} has no database path; "
            "expected e.g. sqlite:///jobs.db or sqlite:////var/lib/app/jobs.db"
        )
    if raw == ":memory:" or raw.startswith("file::memory:") or "mode=memory" in parts.query:
        raise StoreURLError(
            f"SQLite store URL {url!r} asks for an in-memory database, which every connection "
            "and process would see empty; use memory:// for an in-process store, or a file path"
        )
    if raw.endswith("/"):
        raise StoreURLError(f"SQLite store URL {url!r} names a directory, not a database file")

    busy_timeout_ms = DEFAULT_BUSY_TIMEOUT_MS
    poll_interval = DEFAULT_POLL_INTERVAL
    idle_poll_interval: float | None = None
    seen: set[str] = set()
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _KNOWN_PARAMS:
            known = ", ".join(_KNOWN_PARAMS)
            raise StoreURLError(
                f"unknown query parameter {key!r} in SQLite store URL {url!r}; known: {known}"
            )
        if key in seen:
            raise StoreURLError(f"query parameter {key!r} is given twice in {url!r}")
        seen.add(key)
        if key == "busy_timeout":
            busy_timeout_ms = int(_number(url, key, value, int, minimum=0))
        elif key == "poll_interval":
            poll_interval = _number(url, key, value, float, minimum=0.0001)
        else:
            idle_poll_interval = _number(url, key, value, float, minimum=0.0001)
    if idle_poll_interval is None:
        idle_poll_interval = max(DEFAULT_IDLE_POLL_INTERVAL, poll_interval)
    elif idle_poll_interval < poll_interval:
        raise StoreURLError(
            f"idle_poll_interval={idle_poll_interval:g} in {url!r} is shorter than "
            f"poll_interval={poll_interval:g}; the idle rate cannot be the faster one"
        )
    return SQLiteURL(
        path=os.path.abspath(raw),
        busy_timeout_ms=busy_timeout_ms,
        poll_interval=poll_interval,
        idle_poll_interval=idle_poll_interval,
    )


def _number(
    url: str, key: str, value: str, kind: type[int] | type[float], *, minimum: float
) -> int | float:
    try:
        number = kind(value)
    except ValueError:
        unit = "an integer (milliseconds)" if kind is int else "a number (seconds)"
        raise StoreURLError(f"query parameter {key}={value!r} in {url!r} must be {unit}") from None
    if not number >= minimum:  # also refuses NaN
        raise StoreURLError(f"query parameter {key}={value!r} in {url!r} must be >= {minimum}")
    return number
