"""Parse ``postgresql://`` store URLs.

A store URL is a standard libpq connection URI (``postgresql://user:password@host:5432/dbname``;
``postgres://`` is accepted too) plus optional query parameters read by this plugin:

* ``schema`` -- the PostgreSQL schema that holds Dispatch's tables (default ``dispatch``);
  lowercase letters, digits and underscores, starting with a letter or underscore, at most 50
  characters. The LISTEN/NOTIFY channel is ``dispatch_<schema>``.
* ``min_size`` / ``max_size`` -- the connection pool's bounds (default 1 and 10), per process
  and per pool (the async store and its sync producer each have one).
* ``pool_timeout`` -- seconds an operation waits for a pooled connection before it fails with
  :class:`~dispatch_core.errors.StoreUnavailableError` (default 10).
* ``prepare_threshold`` -- executions of a statement before psycopg prepares it server-side
  (default 5; ``none`` disables prepared statements, e.g. behind an old PgBouncer).
* ``worker_synchronous_commit`` -- ``off`` (default): the worker's own writes (claim,
  heartbeat, finish, rescue) commit without waiting for the WAL flush, which a server crash
  can only turn into a job run again; ``on``: they wait, like every other write
  (see :data:`~dispatch_plugins.postgres.ops.common.RELAXED`).
* ``statement_timeout``, ``lock_timeout``, ``idle_in_transaction_session_timeout`` -- seconds,
  set on the store's own sessions (defaults 10, 0 and 30; 0 means no limit): the server
  cancels a statement of the store that runs longer, or waits for a lock longer, and ends a
  session left idle inside a transaction (its locks are released).
* ``call_timeout`` -- seconds the store waits for the server to answer one step of a call
  before it drops the connection and raises
  :class:`~dispatch_core.errors.StoreUnavailableError` (default: ``statement_timeout`` + 2,
  so that the server's own cancellation comes first; 0 means no limit). It bounds a call to a
  server that hangs, which neither the server's timeouts nor TCP keepalives can.

Every other query parameter must be a libpq connection parameter (``sslmode``,
``connect_timeout``, ``application_name``, ``options``...) and is passed to libpq unchanged.
Unless the URL sets them, ``connect_timeout`` is 5 seconds (unless ``PGCONNECT_TIMEOUT`` is
set), so an unreachable server fails fast instead of hanging, and TCP keepalives
(``keepalives_idle=10``, ``keepalives_interval=5``, ``keepalives_count=3``) and
``tcp_user_timeout=30000`` (milliseconds) make the kernel give up on a peer that vanished
(see :data:`DEFAULT_LIBPQ`).
"""

from __future__ import annotations

import getpass
import math
import os
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import attrs
import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from dispatch_core.errors import StoreURLError
from dispatch_core.storekit import redact_url

__all__ = [
    "PostgresURL",
    "parse_url",
    "DEFAULT_SCHEMA",
    "DEFAULT_MIN_SIZE",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_POOL_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_STATEMENT_TIMEOUT",
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT",
    "CALL_TIMEOUT_MARGIN",
    "DEFAULT_LIBPQ",
    "OUR_PARAMS",
]

DEFAULT_SCHEMA = "dispatch"
DEFAULT_MIN_SIZE = 1
DEFAULT_MAX_SIZE = 10
DEFAULT_POOL_TIMEOUT = 10.0
DEFAULT_PREPARE_THRESHOLD = 5
#: Seconds libpq waits for a connection when nothing else says (libpq's own default: forever;
#: its minimum is 2).
DEFAULT_CONNECT_TIMEOUT = 5
#: Seconds the server lets one statement of the store run. Claims, heartbeats and finishes
#: take milliseconds; the slowest calls are the admin's scans of ``jobs`` (counts, queue
#: stats). Retention (``prune``) gets six times as long; migrations have no limit.
DEFAULT_STATEMENT_TIMEOUT = 10.0
#: Seconds a statement of the store may wait for a lock (0: no limit of its own, so
#: ``statement_timeout`` bounds the wait).
DEFAULT_LOCK_TIMEOUT = 0.0
#: Seconds a session of the store may sit idle inside a transaction before the server ends
#: it: the store never pauses there, so only a client that hangs mid-transaction (a blocked
#: event loop, a stopped process) is cut off, and its row locks are released.
DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT = 30.0
#: ``call_timeout`` defaults to ``statement_timeout`` plus this: time for the server's
#: cancellation to come back, so that a slow statement is cancelled (and the connection kept)
#: rather than dropped.
CALL_TIMEOUT_MARGIN = 2.0
#: libpq parameters given to every connection unless the URL sets them. Keepalives make the
#: kernel notice an idle connection whose peer vanished (10 s idle, then 3 probes 5 s apart);
#: ``tcp_user_timeout`` (milliseconds) drops a connection whose sent data goes unacknowledged
#: that long, instead of retransmitting for many minutes. Both are ignored on Unix sockets.
DEFAULT_LIBPQ: Mapping[str, str] = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}
#: The largest timeout PostgreSQL accepts (INT_MAX milliseconds), in whole seconds.
_MAX_SECONDS = 2_147_483

#: The query parameters this plugin reads (and removes before handing the URL to libpq).
OUR_PARAMS = (
    "schema",
    "min_size",
    "max_size",
    "pool_timeout",
    "prepare_threshold",
    "worker_synchronous_commit",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "call_timeout",
)
_BOOLEANS = {"on": True, "true": True, "1": True, "yes": True}
_BOOLEANS |= {"off": False, "false": False, "0": False, "no": False}

# Unquoted, lowercase identifiers only: the name is used as is in SQL and in the channel name,
# which PostgreSQL limits to 63 bytes ("dispatch_" + 50 + margin).
_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,49}")


@attrs.frozen
class PostgresURL:
    """A parsed ``postgresql://`` store URL."""

    #: The libpq connection URI, our parameters removed. Holds the password: never log it.
    conninfo: str = attrs.field(repr=False)
    #: ``user@host:port/dbname``, without the password, for messages.
    display: str
    schema: str = DEFAULT_SCHEMA
    min_size: int = DEFAULT_MIN_SIZE
    max_size: int = DEFAULT_MAX_SIZE
    pool_timeout: float = DEFAULT_POOL_TIMEOUT
    #: ``None`` disables server-side prepared statements.
    prepare_threshold: int | None = DEFAULT_PREPARE_THRESHOLD
    #: Whether the worker's hot-path writes wait for the WAL flush when they commit.
    worker_synchronous_commit: bool = False
    #: Seconds (0: none) the server lets a statement of the store run.
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT
    #: Seconds (0: none) a statement of the store may wait for a lock.
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    #: Seconds (0: none) a session of the store may stay idle inside a transaction.
    idle_in_transaction_session_timeout: float = DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT
    #: Seconds (0: none) the store waits for one answer of the server before it drops the
    #: connection.
    call_timeout: float = DEFAULT_STATEMENT_TIMEOUT + CALL_TIMEOUT_MARGIN
    #: The password, if the URL holds one, so that messages can be scrubbed of it.
    password: str | None = attrs.field(default=None, repr=False)

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel on which enqueues wake workers."""
        return f"dispatch_{self.schema}"

    def scrub(self, text: str) -> str:
        """``text`` with the password (if any) masked."""
        if self.password:
            text = text.replace(self.password, "***")
            quoted = quote(self.password, safe="")
            if quoted != self.password:
                text = text.replace(quoted, "***")
        return text


def _libpq_keywords() -> frozenset[str]:
    return frozenset(o.keyword.decode() for o in pq.Conninfo.get_defaults())


def parse_url(url: str) -> PostgresURL:
    """Parse a ``postgresql://`` (or ``postgres://``) store URL.

    Args:
        url: A libpq connection URI, optionally with our query parameters (see the module
            docstring) mixed with libpq's.

    Returns:
        The libpq URI to connect with and the plugin's settings.

    Raises:
        StoreURLError: the scheme is not ``postgresql``/``postgres``, a parameter of ours is
            malformed or given twice, or a query parameter is neither ours nor libpq's.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        reason = _scrub_url(url, str(exc))
        raise StoreURLError(f"invalid PostgreSQL store URL {_safe(url)!r}: {reason}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("postgresql", "postgres") or "://" not in url:
        raise StoreURLError(
            f"not a PostgreSQL store URL: {_safe(url)!r}; expected "
            "postgresql://user:password@host:5432/dbname[?schema=dispatch]"
        )
    ours: dict[str, str] = {}
    passed: list[tuple[str, str]] = []
    libpq = _libpq_keywords()
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in OUR_PARAMS:
            if key in ours:
                raise StoreURLError(f"query parameter {key!r} is given twice in {_safe(url)!r}")
            ours[key] = value
        elif key in libpq:
            passed.append((key, value))
        else:
            known = ", ".join(OUR_PARAMS)
            raise StoreURLError(
                f"unknown query parameter {key!r} in PostgreSQL store URL {_safe(url)!r}; "
                f"dispatch-postgres reads {known}, and any libpq connection parameter "
                "(sslmode, connect_timeout, application_name, options...) is passed through"
            )
    keys = {k for k, _ in passed}
    if "connect_timeout" not in keys and not os.environ.get("PGCONNECT_TIMEOUT"):
        passed.append(("connect_timeout", str(DEFAULT_CONNECT_TIMEOUT)))
    for key, value in DEFAULT_LIBPQ.items():
        # tcp_user_timeout needs libpq 12 or later (psycopg[c] may be built on an older one).
        if key not in keys and key in libpq:
            passed.append((key, value))
    if "application_name" not in keys and "fallback_application_name" not in keys:
        passed.append(("fallback_application_name", "dispatch"))
    conninfo = urlunsplit(
        (parts.scheme, parts.netloc, parts.path, urlencode(passed, quote_via=quote), "")
    )
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        reason = _scrub_url(url, str(exc))  # libpq may quote the bad part: the password?
        raise StoreURLError(f"invalid PostgreSQL store URL {_safe(url)!r}: {reason}") from None

    schema = ours.get("schema", DEFAULT_SCHEMA)
    if not _SCHEMA_RE.fullmatch(schema):
        raise StoreURLError(
            f"schema={_shown(schema)!r} in {_safe(url)!r} is not a plain lowercase identifier: use "
            "letters a-z, digits and underscores, starting with a letter or underscore, "
            "at most 50 characters"
        )
    min_size = _int(url, ours, "min_size", DEFAULT_MIN_SIZE, minimum=0)
    max_size = _int(url, ours, "max_size", max(DEFAULT_MAX_SIZE, min_size), minimum=1)
    if max_size < min_size:
        raise StoreURLError(
            f"max_size={max_size} in {_safe(url)!r} is smaller than min_size={min_size}"
        )
    pool_timeout = _seconds(url, ours, "pool_timeout", DEFAULT_POOL_TIMEOUT, zero=False)
    statement_timeout = _seconds(url, ours, "statement_timeout", DEFAULT_STATEMENT_TIMEOUT)
    lock_timeout = _seconds(url, ours, "lock_timeout", DEFAULT_LOCK_TIMEOUT)
    idle_in_transaction = _seconds(
        url, ours, "idle_in_transaction_session_timeout", DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT
    )
    default_call = statement_timeout + CALL_TIMEOUT_MARGIN if statement_timeout else 0.0
    call_timeout = _seconds(url, ours, "call_timeout", default_call)
    prepare: int | None = DEFAULT_PREPARE_THRESHOLD
    if "prepare_threshold" in ours:
        if ours["prepare_threshold"].lower() in ("none", "off", ""):
            prepare = None
        else:
            prepare = _int(url, ours, "prepare_threshold", DEFAULT_PREPARE_THRESHOLD, minimum=0)
    worker_sync = False
    if "worker_synchronous_commit" in ours:
        raw = ours["worker_synchronous_commit"]
        if raw.lower() not in _BOOLEANS:
            raise StoreURLError(
                f"query parameter worker_synchronous_commit={_shown(raw)!r} in {_safe(url)!r} "
                "must be on or off"
            )
        worker_sync = _BOOLEANS[raw.lower()]
    password = params.get("password")
    return PostgresURL(
        conninfo=conninfo,
        display=_display(params),
        schema=schema,
        min_size=min_size,
        max_size=max_size,
        pool_timeout=pool_timeout,
        prepare_threshold=prepare,
        worker_synchronous_commit=worker_sync,
        statement_timeout=statement_timeout,
        lock_timeout=lock_timeout,
        idle_in_transaction_session_timeout=idle_in_transaction,
        call_timeout=call_timeout,
        password=str(password) if password else None,
    )


def _seconds(
    url: str, ours: dict[str, str], key: str, default: float, *, zero: bool = True
) -> float:
    """A duration in seconds: a finite number > 0, or also 0 ("no limit") when ``zero``."""
    if key not in ours:
        return default
    raw = ours[key]
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and (value > 0 or (zero and value == 0))):
        wanted = ">= 0 (0: no limit)" if zero else "> 0"
        raise StoreURLError(
            f"query parameter {key}={_shown(raw)!r} in {_safe(url)!r} must be a number of "
            f"seconds {wanted}"
        )
    if value > _MAX_SECONDS:
        raise StoreURLError(
            f"query parameter {key}={_shown(raw)!r} in {_safe(url)!r} is too long: PostgreSQL "
            f"takes at most {_MAX_SECONDS} seconds (use 0 for no limit)"
        )
    return value


def _int(url: str, ours: dict[str, str], key: str, default: int, *, minimum: int) -> int:
    if key not in ours:
        return default
    raw = ours[key]
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


def _display(params: Mapping[str, object]) -> str:
    """``user@host:port/dbname`` as libpq will resolve it (environment defaults included)."""
    env = os.environ
    host = str(params.get("host") or params.get("hostaddr") or env.get("PGHOST") or "localhost")
    port = str(params.get("port") or env.get("PGPORT") or "5432")
    try:
        default_user = getpass.getuser()
    except Exception:  # no user name in a minimal container
        default_user = "postgres"
    user = str(params.get("user") or env.get("PGUSER") or default_user)
    dbname = str(params.get("dbname") or env.get("PGDATABASE") or user)
    if host.startswith("/"):
        return f"{user}@{host} (socket, port {port})/{dbname}"
    return f"{user}@{host}:{port}/{dbname}"


def _scrub_url(url: str, text: str) -> str:
    """``text`` with the password of ``url``'s netloc (raw or decoded) masked."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = url.split("://", 1)[-1].split("@", 1)[0].partition(":")[2] or None
    if password:
        for form in {password, unquote(password)}:
            if form:
                text = text.replace(form, "***")
    return text


def _safe(url: str) -> str:
    """``url`` with its secrets masked (the user part's password, ``password=``,
    ``sslpassword=``), for messages."""
    return redact_url(url)


def _shown(value: str) -> str:
    """A value of the URL, as an error may quote it: a secret run into it (``x;password=...``,
    when ``;`` was meant as a separator) masked like one in the URL."""
    return redact_url(value)
