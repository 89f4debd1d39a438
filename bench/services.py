"""The external services some systems need: PostgreSQL and Redis.

Every helper cleans up after itself: schemas and databases it creates are dropped, the Redis
database it uses is flushed before and after. A service that is down raises
:class:`~bench.common.BenchError` with the reason, which turns that system's column into
``ERROR`` instead of stopping the run.

The Dispatch Redis store does not flush anything: each of its measurements gets a key prefix of
its own (``?prefix=bench_<random>_<name>``) in the same database, and those keys are deleted
(:class:`RedisPrefixes`).

The addresses can be changed with ``BENCH_POSTGRES_URL`` (a superuser connection to an
existing database; the default is the local trust-auth ``postgres`` user) and
``BENCH_REDIS_URL`` (must name a database other than 0, which is flushed).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from bench.common import BenchError

if TYPE_CHECKING:
    import redis

__all__ = [
    "POSTGRES_URL",
    "REDIS_URL",
    "token",
    "check_postgres",
    "postgres_version",
    "PgSchemas",
    "fresh_database",
    "with_database",
    "check_redis_url",
    "redis_version",
    "flushed_redis_db",
    "RedisPrefixes",
]

POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")

#: Seconds to wait for a service before declaring it down.
CONNECT_TIMEOUT = 3


def token() -> str:
    """A short random suffix for the names of schemas and databases."""
    return secrets.token_hex(4)


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(f"PostgreSQL unavailable at {_redact(url)}: {reason}") from exc


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def check_postgres(url: str = POSTGRES_URL) -> None:
    """Raise :class:`BenchError` unless PostgreSQL answers at ``url``."""
    with _connect(url) as conn:
        conn.execute("SELECT 1")


def postgres_version(url: str = POSTGRES_URL) -> str:
    """The server's version and durability settings, or why they are unknown (never raises)."""
    try:
        with _connect(url) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            settings = conn.execute(
                "SELECT name, setting FROM pg_settings"
                " WHERE name IN ('fsync', 'synchronous_commit') ORDER BY name"
            ).fetchall()
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"
    durability = ", ".join(f"{name}={value}" for name, value in settings)
    return f"{version[0] if version else 'unknown'} ({durability})"


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = "&".join([q for q in (parts.query,) if q] + [f"{k}={v}" for k, v in params.items()])
    return urlunsplit(parts._replace(query=query))


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database on the same server."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


class PgSchemas:
    """Fresh, randomly named schemas for Dispatch stores; all dropped on exit.

    ``url(name)`` creates schema ``bench_<token>_<name>`` and returns the store URL with
    ``?schema=`` set, so each measurement gets an empty store.
    """

    def __init__(self, url: str = POSTGRES_URL) -> None:
        self.base_url = url
        self.prefix = f"bench_{token()}"
        self.created: list[str] = []
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def __enter__(self) -> PgSchemas:
        self._conn = _connect(self.base_url)
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop_all()

    def url(self, name: str) -> str:
        """Create a fresh schema and return the store URL that uses it."""
        if self._conn is None:
            raise RuntimeError("PgSchemas used outside its with block")
        schema = f"{self.prefix}_{name}"
        self._conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        self.created.append(schema)
        return _with_query(self.base_url, schema=schema)

    def drop_all(self) -> None:
        """Drop every schema created here (and close the admin connection)."""
        if self._conn is None:
            return
        try:
            for schema in reversed(self.created):
                stmt = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                self._conn.execute(stmt)
            self.created.clear()
        finally:
            self._conn.close()
            self._conn = None


@contextlib.contextmanager
def fresh_database(prefix: str, url: str = POSTGRES_URL) -> Iterator[str]:
    """Create database ``<prefix>_<token>``, yield its URL, drop it (closing its sessions)."""
    name = f"{prefix}_{token()}"
    with _connect(url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(url, name)
    finally:
        with _connect(url) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def check_redis_url(url: str) -> int:
    """The database number of ``url``; refuses database 0 (the benchmark flushes it)."""
    path = urlsplit(url).path.strip("/")
    db = int(path) if path.isdigit() else 0
    if db == 0:
        raise BenchError(f"BENCH_REDIS_URL must name a Redis database other than 0: {url}")
    return db


@contextlib.contextmanager
def flushed_redis_db(url: str) -> Iterator[redis.Redis]:
    """A client on the benchmark's Redis database (a peer's broker), flushed on entry and on
    exit."""
    import redis

    check_redis_url(url)
    client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT)
    try:
        try:
            client.ping()
        except redis.RedisError as exc:
            raise BenchError(f"Redis unavailable at {url}: {exc}") from exc
        client.flushdb()
        yield client
    finally:
        with contextlib.suppress(redis.RedisError):
            client.flushdb()
        client.close()


def redis_version(url: str = REDIS_URL) -> str:
    """The server's version and persistence, or why they are unknown (never raises)."""
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT)
        try:
            version = str(client.info("server")["redis_version"])
            persistence = client.info("persistence")
            aof = "on" if persistence.get("aof_enabled") else "off"
            save = client.config_get("save").get("save") or "none"
        finally:
            client.close()
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"
    return f"{version} (appendonly={aof}, save={save})"


class RedisPrefixes:
    """Fresh, randomly named key prefixes for Dispatch Redis stores; their keys deleted.

    ``url(name)`` returns ``BENCH_REDIS_URL`` with ``?prefix=bench_<token>_<name>``, so each
    measurement gets an empty store (nothing else in the database is touched: the keys are
    found with ``SCAN MATCH bench_<token>_*``). Before handing out a new prefix the keys of
    the earlier ones are deleted (untimed), so the server never holds more than one
    measurement's jobs; on exit every key the run created is gone.
    """

    def __init__(self, url: str = REDIS_URL) -> None:
        check_redis_url(url)
        self.base_url = url
        self.prefix = f"bench_{token()}"
        self.created: list[str] = []
        self._client: redis.Redis | None = None

    def __enter__(self) -> RedisPrefixes:
        import redis

        client = redis.Redis.from_url(self.base_url, socket_connect_timeout=CONNECT_TIMEOUT)
        try:
            client.ping()
        except redis.RedisError as exc:
            client.close()
            raise BenchError(f"Redis unavailable at {_redact(self.base_url)}: {exc}") from exc
        self._client = client
        self._delete(f"{self.prefix}_*")  # a random prefix: nothing to find, but be sure
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is None:
            return
        try:
            self._delete(f"{self.prefix}_*")
        finally:
            self._client.close()
            self._client = None

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            raise RuntimeError("RedisPrefixes used outside its with block")
        return self._client

    def url(self, name: str) -> str:
        """Delete the earlier measurements' keys; return a store URL with a new prefix."""
        self._delete(f"{self.prefix}_*")
        prefix = f"{self.prefix}_{name}"
        self.created.append(prefix)
        return _with_query(self.base_url, prefix=prefix)

    def count(self) -> int:
        """How many keys of this run exist right now (for checks)."""
        return sum(1 for _ in self.client.scan_iter(match=f"{self.prefix}_*", count=1000))

    def _delete(self, pattern: str) -> None:
        client = self.client
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
