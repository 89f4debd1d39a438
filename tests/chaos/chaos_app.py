"""The application the chaos suite runs in real ``dispatch worker`` processes.

Environment (set by the suite for each worker process):

* ``CHAOS_URL``: the Dispatch store URL.
* ``CHAOS_LEDGER``: where executions are recorded, ``sqlite:///<file>`` or a
  ``postgresql://`` URL; the ledger table is the suite's own, not part of Dispatch.
* ``CHAOS_SEED``: seeds each job's run time, so a run can be replayed.

Every execution of a handler writes a ledger row when it starts and stamps ``finished_at``
when it ends, so the suite can tell which attempts ran, where, and which were cut short.
The test process imports this module too (relatively), to enqueue the same jobs and to read
the ledger; it never runs the handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, TypeVar

import psycopg

from dispatch_core import Constant, Engine, JobContext

__all__ = [
    "QUEUE",
    "WORK",
    "TICK",
    "TICK_EXPR",
    "Execution",
    "Ledger",
    "make_engine",
    "run_seconds",
]

T = TypeVar("T")

QUEUE = "chaos"
WORK = "chaos.work"
TICK = "chaos.tick"
TICK_EXPR = "* * * * * *"  # every second (six fields: seconds first)
#: Retries enough that kills and a database restart never dead-letter a job.
MAX_RETRIES = 50
#: How long a ledger write keeps retrying while its database is unreachable.
LEDGER_RETRY_SECONDS = 60.0

_COLUMNS = "exec_id, job_id, kind, tick, attempt, worker_id, pid, started_at, finished_at"


class Execution(NamedTuple):
    """One execution of a handler, as the ledger recorded it (times are ``time.time()``)."""

    exec_id: str
    job_id: str
    #: ``"work"`` or ``"tick"``.
    kind: str
    #: For a tick: the job's unique key (``cron:<name>:<tick>``).
    tick: str | None
    attempt: int
    worker_id: str | None
    pid: int
    started_at: float
    #: ``None`` when the execution never ended (its process was killed).
    finished_at: float | None


def run_seconds(seed: int, n: int, attempt: int) -> float:
    """How long execution ``attempt`` of job ``n`` sleeps: 100-300 ms, fixed by the seed."""
    return random.Random(f"{seed}:{n}:{attempt}").uniform(0.1, 0.3)


class Ledger:
    """The executions table, in SQLite or PostgreSQL, written from any thread.

    Each thread keeps its own connection. A write that fails because the database is down
    (the suite restarts PostgreSQL) reconnects and tries again, for up to
    :data:`LEDGER_RETRY_SECONDS`; inserts are keyed by an id made here, so a retried insert
    whose first try did commit is harmless.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite_path: str | None = None
        if url.startswith("sqlite:///"):
            self.sqlite_path = url.removeprefix("sqlite:///")
        elif not url.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"unsupported ledger URL {url!r}")
        self._mark = "?" if self.sqlite_path is not None else "%s"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[Any] = []

    def _connect(self) -> Any:
        conn: Any
        if self.sqlite_path is not None:
            # Used by one thread, but closed by whichever thread calls close().
            conn = sqlite3.connect(
                self.sqlite_path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
        else:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        with self._lock:
            self._opened.append(conn)
        return conn

    def _retrying(self, action: Callable[[Any], T]) -> T:
        """Run ``action(conn)`` on this thread's connection, reconnecting while the database
        is unreachable."""
        deadline = time.monotonic() + LEDGER_RETRY_SECONDS
        while True:
            conn = getattr(self._local, "conn", None)
            try:
                if conn is None:
                    conn = self._local.conn = self._connect()
                return action(conn)
            except (psycopg.OperationalError, sqlite3.OperationalError):
                self._local.conn = None
                if conn is not None:
                    with contextlib.suppress(Exception):  # a broken one may fail to close
                        conn.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def create(self) -> None:
        """Create the table (idempotent)."""
        real = "REAL" if self.sqlite_path is not None else "DOUBLE PRECISION"
        ddl = (
            "CREATE TABLE IF NOT EXISTS chaos_ledger ("
            "exec_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, kind TEXT NOT NULL, tick TEXT, "
            f"attempt INTEGER NOT NULL, worker_id TEXT, pid INTEGER NOT NULL, "
            f"started_at {real} NOT NULL, finished_at {real})"
        )
        self._retrying(lambda conn: conn.execute(ddl))

    def start(self, ctx: JobContext, kind: str, tick: str | None) -> str:
        """Record that an execution starts now; return its id for :meth:`finish`."""
        exec_id = uuid.uuid4().hex
        m = self._mark
        sql = (
            f"INSERT INTO chaos_ledger ({_COLUMNS}) "
            f"VALUES ({m}, {m}, {m}, {m}, {m}, {m}, {m}, {m}, NULL) "
            "ON CONFLICT (exec_id) DO NOTHING"
        )
        worker_id = ctx.job.worker_id or ctx.worker_id
        row = (exec_id, ctx.id, kind, tick, ctx.attempt, worker_id, os.getpid(), time.time())
        self._retrying(lambda conn: conn.execute(sql, row))
        return exec_id

    def finish(self, exec_id: str) -> None:
        """Record that the execution ends now."""
        m = self._mark
        sql = f"UPDATE chaos_ledger SET finished_at = {m} WHERE exec_id = {m}"
        now = time.time()
        self._retrying(lambda conn: conn.execute(sql, (now, exec_id)))

    def executions(self) -> list[Execution]:
        """Every recorded execution, in start order."""
        sql = f"SELECT {_COLUMNS} FROM chaos_ledger ORDER BY started_at, exec_id"
        rows = self._retrying(lambda conn: conn.execute(sql).fetchall())
        return [Execution(*row) for row in rows]

    def close(self) -> None:
        """Close every connection this ledger opened, in any thread."""
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            with contextlib.suppress(Exception):
                conn.close()


def make_engine(url: str, *, ledger: str | None = None, seed: int = 0) -> Engine:
    """An engine with the chaos jobs; with a ``ledger`` URL, the handlers record there."""
    engine = Engine(url)
    book = Ledger(ledger) if ledger is not None else None
    # Ledger writes block; two threads per process keep them off the event loop without
    # opening a connection per job slot.
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="chaos-ledger")

    async def call(fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    @engine.job(name=WORK, queue=QUEUE, max_retries=MAX_RETRIES, backoff=Constant(interval=0.2))
    async def work(ctx: JobContext, n: int) -> None:
        if book is None:
            raise RuntimeError("chaos.work runs only in a worker started with CHAOS_LEDGER")
        exec_id = await call(book.start, ctx, "work", None)
        await asyncio.sleep(run_seconds(seed, n, ctx.attempt))
        await call(book.finish, exec_id)

    @engine.cron(TICK_EXPR, name=TICK, max_retries=MAX_RETRIES)
    async def tick(ctx: JobContext) -> None:
        if book is None:
            raise RuntimeError("chaos.tick runs only in a worker started with CHAOS_LEDGER")
        exec_id = await call(book.start, ctx, "tick", ctx.job.unique_key)
        await call(book.finish, exec_id)

    return engine


def __getattr__(name: str) -> Engine:
    # `dispatch worker chaos_app:engine` builds the engine from the environment on first use,
    # so that importing this module (as the test process does) builds nothing.
    if name != "engine":
        raise AttributeError(name)
    engine = make_engine(
        os.environ["CHAOS_URL"],
        ledger=os.environ["CHAOS_LEDGER"],
        seed=int(os.environ.get("CHAOS_SEED", "0")),
    )
    globals()["engine"] = engine
    return engine
