"""What the operation modules share: the steps an operation yields, the schema's names, and
the listing SQL that jobs, dead-letter entries and runs page alike.

An operation is a generator function: it yields :class:`Stmt` (a statement; the runner sends
back the fetched rows, or the row count) and :class:`Copy` (a binary ``COPY ... FROM STDIN``)
steps, and returns the operation's result. It does no I/O itself, so the same code runs on an
``AsyncConnection`` (:func:`~dispatch_plugins.postgres.connection.run_async`, for
:class:`~dispatch_plugins.postgres.store.PostgresStore`) and on a blocking ``Connection``
(:func:`~dispatch_plugins.postgres.connection.run_sync`, for
:class:`~dispatch_plugins.postgres.sync.PostgresSyncStore`), whether that connection is one of
the store's pool or the caller's (transactional enqueue).

The store's own connections are in autocommit mode, and almost every operation is a single
statement (data-modifying CTEs keep a failure and its dead-letter entry, or a rescue and its
entries, in one statement), so one round trip is one transaction. An operation that needs
several statements in one transaction yields :data:`TRANSACTION` first; on a caller's
connection that marker is ignored: the caller's transaction is the transaction.

An operation's first argument is the SQL it runs, for one schema: a small builder class over
:class:`Tables`, written just above the operations that use it, whose statements are built on
first use and then kept (``cached_property``, or ``lru_cache`` for the ones with variants).
:class:`~dispatch_plugins.postgres.ops.Statements` is the union of every builder.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from functools import cached_property, lru_cache
from typing import Any, Final, TypeVar

import attrs

from dispatch_core.models import DLQEntry, DLQFilter, Job, JobFilter, SortOrder
from dispatch_core.storekit import Truncated
from dispatch_core.workflows.models import RunFilter, WorkflowRun
from dispatch_plugins.postgres.codec import JOB_COLUMNS, WORKER_COLUMNS

__all__ = [
    "Stmt",
    "Copy",
    "TRANSACTION",
    "Step",
    "Steps",
    "RELAXED",
    "LEASE_FREE",
    "NCOLS",
    "Tables",
    "WorkerRowSQL",
    "ListingSQL",
    "claim_filters",
    "given",
    "listing",
]

T = TypeVar("T")


@attrs.frozen(slots=True)
class Stmt:
    """One statement. The runner sends back its rows (``rows=True``) or its row count.

    ``unbounded``: the statement may rightly run for long (a migration's index build, the
    wait for another process's migration): on the store's connections it runs without the
    call's deadline, and the server's ``statement_timeout`` is lifted for the rest of the
    transaction (which it must be in).
    """

    sql: str
    params: Sequence[Any] | Mapping[str, Any] | None = None
    rows: bool = False
    unbounded: bool = False


@attrs.frozen(slots=True)
class Copy:
    """A binary ``COPY ... FROM STDIN`` of ``rows`` typed as ``types``. Sends back ``None``."""

    sql: str
    types: Sequence[str]
    rows: Iterable[Sequence[Any]]


class _Transaction:
    def __repr__(self) -> str:
        return "TRANSACTION"


#: Yielded first by an operation whose statements must commit together.
TRANSACTION: Final = _Transaction()

#: What an operation yields; the runner sends back rows, a row count or ``None``.
Step = Stmt | Copy | _Transaction
Steps = Generator[Step, Any, T]

#: Joined into the FROM clause of the worker's hot-path writes (claim, heartbeat, finish,
#: rescue): ``set_config(..., true)`` lasts until the end of the statement's own transaction,
#: so that commit does not wait for the WAL to reach the disk (``synchronous_commit = off``)
#: while every other write (enqueue above all) stays fully durable. What a server crash can
#: lose is the last fraction of a second of these writes, and each loss only makes a job run
#: again: a lost claim or heartbeat leaves a lease that the worker's later writes are fenced
#: out of; a lost outcome leaves the job running until its lease expires and it is rescued.
#: The worker's guarantee is at-least-once anyway (a worker can die after its handler and
#: before the outcome is written). Any later durable commit makes them durable too (the WAL
#: is flushed in order). ``?worker_synchronous_commit=on`` turns this off.
RELAXED = "(SELECT set_config('synchronous_commit', 'off', true)) AS relaxed"

#: Fencing: a write about an attempt lands only while that attempt holds the job.
LEASE_FREE = "worker_id = NULL, attempt_token = NULL, lease_expires_at = NULL"
#: The number of job columns, before any extra column a statement selects.
NCOLS = len(JOB_COLUMNS)


class Tables:
    """The names one schema's statements are written with: the base of every SQL builder.

    Args:
        schema: The schema holding the tables (a plain lowercase identifier).
        relaxed_worker_commits: Commit the worker's hot-path writes (claim, heartbeat,
            finish, rescue) without waiting for the WAL flush; see :data:`RELAXED`.
    """

    def __init__(self, schema: str, relaxed_worker_commits: bool = True) -> None:
        s = f'"{schema}"'
        self.schema = schema
        self.relaxed_worker_commits = relaxed_worker_commits
        self.quoted_schema = s
        self.jobs = f"{s}.jobs"
        self.dlq = f"{s}.dlq"
        self.workers = f"{s}.workers"
        self.leader = f"{s}.leader"
        self.cron = f"{s}.cron"
        self.queues = f"{s}.queues"
        self.buckets = f"{s}.queue_buckets"
        self.runs = f"{s}.workflow_runs"
        self.steps = f"{s}.workflow_steps"
        self.events = f"{s}.workflow_events"
        self.channel = f"dispatch_{schema}"
        #: Queues a wake-up for every listener, delivered when the transaction commits.
        self.notify = f"pg_notify('{self.channel}', '')"
        #: Joined into the hot-path writes' FROM clause when their commits are relaxed.
        self.relax = f",\n    {RELAXED}" if relaxed_worker_commits else ""
        #: The FROM clause of a hot-path write that has none of its own.
        self.claim_from = f"\nFROM {RELAXED}" if relaxed_worker_commits else ""


class WorkerRowSQL(Tables):
    """The worker row's upsert: registration, and the heartbeat it rides along with."""

    @cached_property
    def upsert_worker(self) -> str:
        """Insert or replace a worker's row (named parameters: :data:`WORKER_COLUMNS`)."""
        wcols = ", ".join(WORKER_COLUMNS)
        return (
            f"INSERT INTO {self.workers} ({wcols})\n"
            "VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)b::text[], %(concurrency)s,\n"
            "        %(version)s, %(started_at)b, %(last_seen)b, %(state)s, %(names)b::text[])\n"
            "ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in WORKER_COLUMNS[1:])
        )


def claim_filters(by_queue: bool, by_name: bool) -> str:
    """The conditions on the caller's queues and job names, when given (of a claim, its
    candidate scans, and the next due job)."""
    sql = " AND queue = ANY(%(queues)b::text[])" if by_queue else ""
    return sql + (" AND name = ANY(%(names)b::text[])" if by_name else "")


# -- listings: jobs, dead-letter entries and runs, paged by id, with previews ----------------

_Listed = TypeVar("_Listed", Job, DLQEntry, WorkflowRun)


class ListingSQL(Tables):
    """Paged listings, and their previewing wrapper."""

    @lru_cache(maxsize=64)  # noqa: B019 -- one Statements per schema, kept for the process
    def previewed(
        self,
        page: str,
        columns: tuple[str, ...],
        bodies: tuple[str, ...],
        preview: int,
        order: SortOrder,
    ) -> str:
        """A listing ``page`` (a statement selecting ``columns``) with previews: each body
        whose text (the server's rendering of the jsonb) is longer than ``preview`` bytes
        comes back NULL, and after the columns come, for each body, its first ``preview``
        characters when it is longer (``left`` counts characters: the decoder cuts them to
        bytes) and its length in bytes.

        The page is chosen first, in a subquery (its LIMIT keeps the planner from merging
        it), so only the listed rows are rendered, each body once (the ``OFFSET 0`` fence
        keeps the lateral subquery from being inlined into each use); a long body never
        leaves the server."""
        n = int(preview)  # a number in the SQL text: one prepared statement per length
        outer = [
            f"CASE WHEN octet_length(t.{c}) > {n} THEN NULL ELSE p.{c} END"
            if c in bodies
            else f"p.{c}"
            for c in columns
        ]
        for c in bodies:
            outer += (
                f"CASE WHEN octet_length(t.{c}) > {n} THEN left(t.{c}, {n}) END",
                f"octet_length(t.{c})",
            )
        texts = ", ".join(f"p.{c}::text AS {c}" for c in bodies)
        return (
            f"SELECT {', '.join(outer)}\nFROM ({page}) AS p\n"
            f"CROSS JOIN LATERAL (SELECT {texts} OFFSET 0) AS t\n"
            f"ORDER BY p.id {'DESC' if order is SortOrder.DESC else 'ASC'}"
        )

    @lru_cache(maxsize=256)  # noqa: B019
    def page(
        self,
        select: str,
        columns: tuple[str, ...],
        after: bool,
        order: SortOrder,
        fixed: tuple[str, ...] = (),
    ) -> str:
        """``select`` filtered by equality on ``columns`` (and the parameterless conditions
        ``fixed``), by id in ``order``, from the cursor on. The cursor is a range on the id
        (``id < %s ORDER BY id DESC LIMIT n``), so the primary key, or an index of (filter
        column, id), is read in order from the cursor and the scan stops with the page: a page
        past a cursor costs the same however deep it is (an offset still walks the rows it
        skips)."""
        desc = order is SortOrder.DESC
        conditions = [f"{c} = %s" for c in columns] + list(fixed)
        if after:
            conditions.append("id < %s" if desc else "id > %s")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return f"{select}{where}\nORDER BY id {'DESC' if desc else 'ASC'} LIMIT %s OFFSET %s"


def listing(
    q: ListingSQL,
    sql: str,
    params: list[Any],
    filter: JobFilter | DLQFilter | RunFilter,
    columns: tuple[str, ...],
    bodies: tuple[str, ...],
    decode: Callable[[Sequence[Any]], _Listed],
) -> Steps[list[_Listed]]:
    """Run the listing ``sql`` (a :meth:`ListingSQL.page` statement selecting ``columns``,
    with its filters' ``params``) for ``filter``'s page, with previews of ``bodies`` when the
    filter asks for them."""
    params = _page_params(params, filter.after, filter.limit, filter.offset)
    if filter.preview is not None:
        sql = q.previewed(sql, columns, bodies, filter.preview, filter.order)
        rows = yield Stmt(sql, params, rows=True)
        return _decode_previewed(rows, columns, bodies, filter.preview, decode)
    rows = yield Stmt(sql, params, rows=True)
    return [decode(row) for row in rows]


def _decode_previewed(
    rows: Sequence[Sequence[Any]],
    columns: tuple[str, ...],
    bodies: tuple[str, ...],
    preview: int,
    decode: Callable[[Sequence[Any]], _Listed],
) -> list[_Listed]:
    """Decode the rows of a :meth:`ListingSQL.previewed` statement: each body its statement
    left out becomes a :class:`Truncated`."""
    out: list[_Listed] = []
    width = len(columns)
    for row in rows:
        cut: dict[str, Any] = {}
        for i, body in enumerate(bodies):
            head, size = row[width + 2 * i], row[width + 2 * i + 1]
            if size is not None and size > preview:
                cut[body] = Truncated(preview=Truncated.cut(head, preview), size=size)
        item = decode(row[:width])
        out.append(attrs.evolve(item, **cut) if cut else item)
    return out


def _page_params(params: list[Any], after: str | None, limit: int, offset: int) -> list[Any]:
    """The parameters of a :meth:`ListingSQL.page` statement."""
    return [*params, *(() if after is None else (after,)), limit, offset]


def given(*pairs: tuple[str, object]) -> tuple[tuple[str, ...], list[Any]]:
    """The columns whose value is given, and those values."""
    columns = tuple(c for c, v in pairs if v is not None)
    return columns, [v for _, v in pairs if v is not None]
