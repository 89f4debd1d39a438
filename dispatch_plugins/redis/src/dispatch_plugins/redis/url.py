"""Parse ``redis://``, ``rediss://`` and ``unix://`` store URLs.

Forms::

    redis://[[username]:password@]host[:port][/db][?option=value...]
    rediss://...                                   (TLS)
    unix://[[username]:password@]/path/to/redis.sock[?db=N&option=value...]

Options read by this plugin:

* ``prefix`` -- the first part of every key and of the wake-up channel (default
  ``dispatch``), so that several applications can share one server (or one database);
  letters, digits and ``_ . - :``, at most 64 characters.
* ``db`` -- the database number, for ``unix://`` (for ``redis://`` it is the path).
* ``socket_timeout`` / ``socket_connect_timeout`` -- seconds (defaults 10 and 5).
* ``max_connections`` -- the connection pool's bound, per process and per client.
* ``health_check_interval`` -- seconds after which an idle connection is pinged before use.
* ``client_name`` -- the name shown by ``CLIENT LIST`` (default ``dispatch``).
* ``ssl_cert_reqs`` (``none``/``optional``/``required``), ``ssl_ca_certs``, ``ssl_certfile``,
  ``ssl_keyfile``, ``ssl_check_hostname`` -- TLS settings, ``rediss://`` only.

A password goes in the URL's user part (``redis://:secret@host``); it is never shown in
messages. A ``password=`` query parameter is refused: query strings end up in logs.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import attrs

from dispatch_core.errors import StoreURLError
from dispatch_core.storekit import redact_url

__all__ = ["RedisURL", "parse_url", "DEFAULT_PREFIX", "OPTIONS"]

DEFAULT_PREFIX = "dispatch"
DEFAULT_PORT = 6379
DEFAULT_SOCKET_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 5.0

OPTIONS = (
    "prefix",
    "db",
    "socket_timeout",
    "socket_connect_timeout",
    "max_connections",
    "health_check_interval",
    "client_name",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_check_hostname",
)
_TLS_OPTIONS = frozenset(o for o in OPTIONS if o.startswith("ssl_"))
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_BOOLEANS = {"on": True, "true": True, "1": True, "yes": True}
_BOOLEANS |= {"off": False, "false": False, "0": False, "no": False}


@attrs.frozen
class RedisURL:
    """A parsed store URL."""

    #: ``host:port/db`` or ``unix:/path (db N)``, with the user but never the password.
    display: str
    #: Keyword arguments for ``redis.Redis`` / ``redis.asyncio.Redis``. Holds the password.
    kwargs: dict[str, Any] = attrs.field(repr=False)
    prefix: str = DEFAULT_PREFIX
    password: str | None = attrs.field(default=None, repr=False)

    @property
    def channel(self) -> str:
        """The pub/sub channel on which writes that make jobs runnable wake workers."""
        return f"{self.prefix}:wake"

    def scrub(self, text: str) -> str:
        """``text`` with the password (raw or percent-encoded) masked."""
        if self.password:
            for form in {self.password, quote(self.password, safe="")}:
                text = text.replace(form, "***")
        return text


def parse_url(url: str) -> RedisURL:
    """Parse a store URL (see the module docstring).

    Raises:
        StoreURLError: the scheme is not ``redis``/``rediss``/``unix``, or a part or an
            option is malformed or unknown; the message never holds the password.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise StoreURLError(f"invalid Redis store URL {_safe(url)!r}: {_scrub(url, exc)}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix") or "://" not in url:
        raise StoreURLError(
            f"not a Redis store URL: {_safe(url)!r}; expected redis://[:password@]host[:port][/db]"
            "[?prefix=dispatch], rediss://... (TLS) or unix:///path/to/redis.sock[?db=0]"
        )
    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "password":
            raise StoreURLError(
                f"put the password in the user part of {_safe(url)!r} "
                "(redis://:password@host or unix://:password@/path), not in the query string"
            )
        if key not in OPTIONS:
            raise StoreURLError(
                f"unknown query parameter {key!r} in Redis store URL {_safe(url)!r}; "
                f"dispatch-redis reads {', '.join(OPTIONS)}"
            )
        if key in options:
            raise StoreURLError(f"query parameter {key!r} is given twice in {_safe(url)!r}")
        options[key] = value
    if scheme != "rediss" and _TLS_OPTIONS & options.keys():
        raise StoreURLError(
            f"TLS options ({', '.join(sorted(_TLS_OPTIONS & options.keys()))}) in {_safe(url)!r} "
            "need a rediss:// URL"
        )

    kwargs: dict[str, Any] = {}
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if username:
        kwargs["username"] = username
    if password:
        kwargs["password"] = password
    who = f"{username}@" if username else ""

    if scheme == "unix":
        path = unquote(parts.path)
        if not path or path == "/":
            raise StoreURLError(
                f"Redis socket URL {_safe(url)!r} has no socket path; expected "
                "unix:///path/to/redis.sock"
            )
        if parts.hostname:
            raise StoreURLError(
                f"Redis socket URL {_safe(url)!r} names a host ({parts.hostname!r}); "
                "write unix:///path/to/redis.sock (three slashes)"
            )
        db = _int(url, options, "db", 0, minimum=0)
        kwargs["unix_socket_path"] = path
        display = f"{who}unix:{path} (db {db})"
    else:
        if "db" in options:
            raise StoreURLError(
                f"give the database number of {_safe(url)!r} as its path "
                f"(redis://host:6379/{options['db']}), not as a query parameter"
            )
        raw_db = parts.path.lstrip("/")
        if raw_db and not raw_db.isdigit():
            raise StoreURLError(
                f"the path of {_safe(url)!r} must be a database number "
                f"(redis://host:6379/0), not {_shown(parts.path)!r}"
            )
        db = int(raw_db) if raw_db else 0
        host = parts.hostname or "localhost"
        kwargs["host"] = host
        kwargs["port"] = port or DEFAULT_PORT
        if scheme == "rediss":
            kwargs["ssl"] = True
            reqs = options.get("ssl_cert_reqs", "required").lower()
            if reqs not in ("none", "optional", "required"):
                raise StoreURLError(
                    f"ssl_cert_reqs={_shown(options['ssl_cert_reqs'])!r} in {_safe(url)!r} must be "
                    "none, optional or required"
                )
            kwargs["ssl_cert_reqs"] = reqs
            for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
                if key in options:
                    kwargs[key] = options[key]
            if "ssl_check_hostname" in options:
                kwargs["ssl_check_hostname"] = _bool(url, options, "ssl_check_hostname")
        shown_host = f"[{host}]" if ":" in host else host
        display = f"{who}{shown_host}:{kwargs['port']}/{db}"
    kwargs["db"] = db

    prefix = options.get("prefix", DEFAULT_PREFIX)
    if not _PREFIX_RE.fullmatch(prefix):
        raise StoreURLError(
            f"prefix={_shown(prefix)!r} in {_safe(url)!r} must be 1 to 64 letters, digits or "
            "_ . - :"
        )
    kwargs["socket_timeout"] = _float(url, options, "socket_timeout", DEFAULT_SOCKET_TIMEOUT)
    kwargs["socket_connect_timeout"] = _float(
        url, options, "socket_connect_timeout", DEFAULT_CONNECT_TIMEOUT
    )
    if "max_connections" in options:
        kwargs["max_connections"] = _int(url, options, "max_connections", 0, minimum=1)
    if "health_check_interval" in options:
        kwargs["health_check_interval"] = _int(url, options, "health_check_interval", 0, minimum=0)
    kwargs["client_name"] = options.get("client_name") or "dispatch"
    return RedisURL(display=display, kwargs=kwargs, prefix=prefix, password=password)


def _int(url: str, options: dict[str, str], key: str, default: int, *, minimum: int) -> int:
    if key not in options:
        return default
    raw = options[key]
    try:
        value = int(raw)
    except ValueError:
        raise StoreURLError(
            f"query parameter {key}={_shown(raw)!r} in {_safe(url)!r} must be an integer"
        ) from None
    if value < minimum:
        raise StoreURLError(
            f"query parameter {key}={_shown(raw)!r} in {_safe(url)!r} must be >= {minimum}"
        )
    return value


def _float(url: str, options: dict[str, str], key: str, default: float) -> float:
    if key not in options:
        return default
    raw = options[key]
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):  # also refuses NaN
        raise StoreURLError(
            f"query parameter {key}={_shown(raw)!r} in {_safe(url)!r} must be a number of "
            "seconds > 0"
        )
    return value


def _bool(url: str, options: dict[str, str], key: str) -> bool:
    raw = options[key]
    if raw.lower() not in _BOOLEANS:
        raise StoreURLError(
            f"query parameter {key}={_shown(raw)!r} in {_safe(url)!r} must be on or off"
        )
    return _BOOLEANS[raw.lower()]


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        userinfo = url.split("://", 1)[-1].split("@", 1)
        return userinfo[0].partition(":")[2] or None if len(userinfo) == 2 else None


def _scrub(url: str, exc: Exception) -> str:
    text = str(exc)
    password = _password(url)
    if password:
        for form in {password, unquote(password)}:
            text = text.replace(form, "***")
    return text


def _safe(url: str) -> str:
    """``url`` with its secrets masked (the user part's password, and ``password=``,
    ``token=``... query parameters, in any case), for messages: core's
    :func:`~dispatch_core.storekit.redact_url`, as every store uses."""
    return redact_url(url)


def _shown(value: str) -> str:
    """A value of the URL, as an error may quote it: a secret run into it (``x;password=...``,
    when ``;`` was meant as a separator) masked like one in the URL."""
    return redact_url(value)
