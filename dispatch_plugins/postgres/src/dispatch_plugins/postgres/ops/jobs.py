"""Producing, inspection and control: enqueue (on the store's connections or the caller's),
get_job, list_jobs, count_jobs, count_runnable, throughput, cancel and retry."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from functools import cached_property, lru_cache

from dispatch_core.errors import InvalidTransitionError, JobNotFoundError
from dispatch_core.models import Job, JobFilter, NewJob, RunnableCount, SortOrder, ThroughputBucket
from dispatch_core.states import TRANSITIONS, JobState, check_transition
from dispatch_core.storekit import STORE_SECTIONS, job_from_new
from dispatch_plugins.postgres.codec import (
    COPY_COLUMNS,
    COPY_TYPES,
    INSERT_COLUMNS,
    JOB_COLUMNS,
    JOB_SELECT,
    aware,
    copy_row,
    decode_job,
    new_job_columns,
    new_job_params,
)
from dispatch_plugins.postgres.ops.common import (
    LEASE_FREE,
    NCOLS,
    TRANSACTION,
    Copy,
    ListingSQL,
    Steps,
    Stmt,
    Tables,
    given,
    listing,
)
from dispatch_plugins.postgres.schema import KEY_SCOPE, RUNNABLE

__all__ = [
    "COPY_MIN_ROWS",
    "EnqueueSQL",
    "JobReadSQL",
    "JobCountSQL",
    "JobControlSQL",
    "JobsSQL",
    *STORE_SECTIONS["jobs"],
]

# -- producing ----------------------------------------------------------------------------------

#: From this many jobs without unique keys, an enqueue goes through binary COPY (a few more
#: round trips, but a third of the cost per row of ``INSERT ... SELECT FROM unnest``).
COPY_MIN_ROWS = 200

_VALUES = "%s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb"
# A key taken in the job's tenant skips the row; the caller then reads the row that holds the
# key. (A taken id still fails the statement: no row of it is written.) The scalar subquery is
# evaluated once, and only if a row was inserted.
_ON_CONFLICT = f"ON CONFLICT (unique_key, ({KEY_SCOPE})) WHERE unique_key IS NOT NULL DO NOTHING"
_UNNEST = (
    "SELECT id, name, queue, payload::jsonb, priority, max_attempts, timeout, run_at,\n"
    "       created_at, created_at, unique_key, tenant, headers::jsonb\n"
    "FROM unnest(%(id)b::text[], %(name)b::text[], %(queue)b::text[],\n"
    "            %(payload)b::text[], %(priority)b::int4[], %(max_attempts)b::int4[],\n"
    "            %(timeout)b::float8[], %(run_at)b::timestamptz[],\n"
    "            %(created_at)b::timestamptz[], %(unique_key)b::text[],\n"
    "            %(tenant)b::text[], %(headers)b::text[])\n"
    "    AS t(id, name, queue, payload, priority, max_attempts, timeout, run_at,\n"
    "         created_at, unique_key, tenant, headers)"
)
_INSERT_COLS = ", ".join(INSERT_COLUMNS)


class EnqueueSQL(Tables):
    """The statements of :func:`enqueue` (through which cron and workflows enqueue too)."""

    @cached_property
    def insert_one(self) -> str:
        return (
            f"WITH ins AS (INSERT INTO {self.jobs} ({_INSERT_COLS}) VALUES ({_VALUES}))\n"
            f"SELECT {self.notify}::text"
        )

    @cached_property
    def insert_many(self) -> str:
        return (
            f"WITH ins AS (INSERT INTO {self.jobs} ({_INSERT_COLS})\n{_UNNEST})\n"
            f"SELECT {self.notify}::text"
        )

    @cached_property
    def copy_jobs(self) -> str:
        return f"COPY {self.jobs} ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT BINARY)"

    @cached_property
    def notify_only(self) -> str:
        return f"SELECT {self.notify}::text"

    @cached_property
    def insert_one_unique(self) -> str:
        return (
            f"WITH ins AS (INSERT INTO {self.jobs} ({_INSERT_COLS}) VALUES ({_VALUES})\n"
            f"    {_ON_CONFLICT} RETURNING id)\n"
            f"SELECT id, (SELECT {self.notify}::text) FROM ins"
        )

    @cached_property
    def insert_many_unique(self) -> str:
        return (
            f"WITH ins AS (INSERT INTO {self.jobs} ({_INSERT_COLS})\n{_UNNEST}\n"
            f"    {_ON_CONFLICT} RETURNING id)\n"
            f"SELECT id, (SELECT {self.notify}::text) FROM ins"
        )

    @cached_property
    def jobs_by_unique_key(self) -> str:
        """By key alone (the index's first column): the caller drops other tenants' rows."""
        return f"SELECT {JOB_SELECT} FROM {self.jobs} WHERE unique_key = ANY(%b::text[])"


def enqueue(q: EnqueueSQL, jobs: Sequence[NewJob]) -> Steps[list[Job]]:
    """Insert ``jobs`` and wake the listeners when the transaction commits; a ``unique_key``
    taken in the job's tenant yields the job that holds it. A taken id fails the statement
    (``jobs_pkey``; the store raises :class:`~dispatch_core.errors.JobIdTakenError`).

    One statement for one job or a batch (``INSERT ... SELECT FROM unnest``); a large batch
    without unique keys goes through binary ``COPY`` and ``pg_notify`` in one transaction.
    """
    if not jobs:
        return []
    if not any(j.unique_key is not None for j in jobs):
        if len(jobs) == 1:
            yield Stmt(q.insert_one, new_job_params(jobs[0]))
        elif len(jobs) < COPY_MIN_ROWS:
            yield Stmt(q.insert_many, new_job_columns(jobs))
        else:
            yield TRANSACTION
            yield Copy(q.copy_jobs, COPY_TYPES, map(copy_row, jobs))
            yield Stmt(q.notify_only)
        return [job_from_new(new) for new in jobs]
    return (yield from _enqueue_unique(q, jobs))


def _enqueue_unique(q: EnqueueSQL, jobs: Sequence[NewJob]) -> Steps[list[Job]]:
    out: list[Job | None] = [None] * len(jobs)
    todo = list(range(len(jobs)))
    # Normally one round: the insert, plus one read when a key was taken. Another round only if
    # a key's holder vanished between the two (a job deleted by hand meanwhile).
    for _ in range(5):
        batch = [jobs[i] for i in todo]
        if len(batch) == 1:
            rows = yield Stmt(q.insert_one_unique, new_job_params(batch[0]), rows=True)
        else:
            rows = yield Stmt(q.insert_many_unique, new_job_columns(batch), rows=True)
        inserted = {row[0] for row in rows}
        taken: dict[tuple[str | None, str], None] = {}
        for i in todo:
            new = jobs[i]
            if new.id in inserted:
                out[i] = job_from_new(new)
            else:
                assert new.unique_key is not None  # a job without a key is always inserted
                taken[new.tenant, new.unique_key] = None
        if not taken:
            break
        names = list({key: None for _, key in taken})
        rows = yield Stmt(q.jobs_by_unique_key, (names,), rows=True)
        # Each key's holder in its tenant; other tenants holding the same key do not count.
        holders = {
            (job.tenant, job.unique_key): job
            for job in map(decode_job, rows)
            if (job.tenant, job.unique_key) in taken
        }
        todo = [
            i
            for i in todo
            if out[i] is None and (jobs[i].tenant, jobs[i].unique_key) not in holders
        ]
        for i, new in enumerate(jobs):
            if out[i] is None and (new.tenant, new.unique_key) in holders:
                out[i] = holders[new.tenant, new.unique_key]
        if not todo:
            break
    else:
        raise RuntimeError("enqueue: the holders of unique keys kept vanishing; giving up")
    return [job for job in out if job is not None]


# -- inspection ---------------------------------------------------------------------------------


class JobReadSQL(ListingSQL):
    """The statements of :func:`get_job` and :func:`list_jobs`."""

    @cached_property
    def get_job(self) -> str:
        return f"SELECT {JOB_SELECT} FROM {self.jobs} WHERE id = %s"

    def list_jobs(self, columns: tuple[str, ...], after: bool, order: SortOrder) -> str:
        """Jobs filtered by equality on ``columns``, by id in ``order``, paged; past a
        cursor (one more parameter, before the limit) when ``after``."""
        return self.page(f"SELECT {JOB_SELECT} FROM {self.jobs}", columns, after, order)


def get_job(q: JobReadSQL, job_id: str) -> Steps[Job]:
    """See :meth:`dispatch_core.store.Store.get_job`."""
    rows = yield Stmt(q.get_job, (job_id,), rows=True)
    if not rows:
        raise JobNotFoundError(job_id)
    return decode_job(rows[0])


_JOB_BODIES = ("payload", "result")


def list_jobs(q: JobReadSQL, filter: JobFilter) -> Steps[list[Job]]:
    """See :meth:`dispatch_core.store.Store.list_jobs`."""
    columns, params = given(
        ("state", None if filter.state is None else filter.state.value),
        ("queue", filter.queue),
        ("name", filter.name),
        ("tenant", filter.tenant),
    )
    sql = q.list_jobs(columns, filter.after is not None, filter.order)
    return (yield from listing(q, sql, params, filter, JOB_COLUMNS, _JOB_BODIES, decode_job))


def _equal(*columns: tuple[str, bool]) -> str:
    """`` WHERE c = %s AND ...`` for the columns that are on (empty when none is)."""
    on = [f"{c} = %s" for c, wanted in columns if wanted]
    return f" WHERE {' AND '.join(on)}" if on else ""


class JobCountSQL(Tables):
    """The statements of :func:`count_jobs`, :func:`count_runnable` and :func:`throughput`."""

    @lru_cache(maxsize=8)  # noqa: B019 -- one Statements per schema, kept for the process
    def count_jobs(self, by_queue: bool, by_tenant: bool) -> str:
        """Job counts by state, of one queue and one tenant when asked (a scan: an operator's
        view, not a hot path)."""
        where = _equal(("queue", by_queue), ("tenant", by_tenant))
        return f"SELECT state, count(*) FROM {self.jobs}{where} GROUP BY state"

    @lru_cache(maxsize=2)  # noqa: B019
    def count_runnable(self, by_tenant: bool) -> str:
        """Runnable jobs by queue and name, of one tenant when asked, but for the names in
        ``%(excluded)b``. A plain read: no row lock, so it never holds up a claim.

        The conditions on state and run_at are jobs_due_idx's predicate and key, so the
        (generic) plan reads the due rows only, through that index, however many finished
        rows the table keeps; a HashAggregate groups them, with no sort (the caller orders
        the groups). No index of its own: it would cost every enqueue for a read made about
        once a minute. A million due jobs take about 0.3 s.
        """
        tenant = " AND tenant = %(tenant)s" if by_tenant else ""
        return (
            f"SELECT queue, name, count(*) FROM {self.jobs}\n"
            f"WHERE {RUNNABLE} AND run_at <= %(now)b{tenant}\n"
            "  AND name <> ALL(%(excluded)b::text[])\n"
            "GROUP BY queue, name"
        )

    @lru_cache(maxsize=8)  # noqa: B019
    def throughput(self, by_queue: bool, by_tenant: bool) -> str:
        """Completed and failed jobs per bucket of ``%(size)s`` seconds since the epoch, from
        ``%(since)b`` on. ``state IN ('completed', 'failed')`` implies jobs_finished_idx's
        predicate, so the range on finished_at is one index range per state rather than a
        scan of the table."""
        filters = "".join(
            f" AND {c} = %({c})s" for c, on in (("queue", by_queue), ("tenant", by_tenant)) if on
        )
        return (
            "SELECT floor(extract(epoch FROM finished_at) / %(size)s)::bigint AS slot,\n"
            "       count(*) FILTER (WHERE state = 'completed'),\n"
            "       count(*) FILTER (WHERE state = 'failed')\n"
            f"FROM {self.jobs}\n"
            f"WHERE state IN ('completed', 'failed') AND finished_at >= %(since)b{filters}\n"
            "GROUP BY slot ORDER BY slot"
        )


def count_jobs(
    q: JobCountSQL, *, queue: str | None = None, tenant: str | None = None
) -> Steps[dict[JobState, int]]:
    """See :meth:`dispatch_core.store.Store.count_jobs`."""
    columns, params = given(("queue", queue), ("tenant", tenant))
    rows = yield Stmt(q.count_jobs("queue" in columns, "tenant" in columns), params, rows=True)
    return {JobState(state): n for state, n in rows}


def count_runnable(
    q: JobCountSQL,
    *,
    now: datetime,
    tenant: str | None = None,
    exclude_names: Collection[str] = (),
) -> Steps[list[RunnableCount]]:
    """See :meth:`dispatch_core.store.Store.count_runnable`: one read, grouped by the server
    and ordered here by code point (the order Python sorts strings in, whatever the
    database's collation)."""
    params = {"now": aware(now), "tenant": tenant, "excluded": sorted(exclude_names)}
    rows = yield Stmt(q.count_runnable(tenant is not None), params, rows=True)
    return [RunnableCount(queue=queue, name=name, count=n) for queue, name, n in sorted(rows)]


def throughput(
    q: JobCountSQL,
    *,
    since: datetime,
    bucket_seconds: int,
    queue: str | None = None,
    tenant: str | None = None,
) -> Steps[list[ThroughputBucket]]:
    """See :meth:`dispatch_core.store.Store.throughput`: one ``GROUP BY`` over the finished
    jobs' index."""
    params = {"size": bucket_seconds, "since": aware(since), "queue": queue, "tenant": tenant}
    rows = yield Stmt(q.throughput(queue is not None, tenant is not None), params, rows=True)
    return [
        ThroughputBucket(
            start=datetime.fromtimestamp(slot * bucket_seconds, UTC), completed=done, failed=failed
        )
        for slot, done, failed in rows
    ]


# -- control ------------------------------------------------------------------------------------


def _sources_of(target: JobState, *, exclude: Collection[JobState] = ()) -> str:
    """SQL list of the states from which ``target`` may be reached, per the transition table."""
    states = sorted(s.value for s, to in TRANSITIONS.items() if target in to and s not in exclude)
    return ", ".join(f"'{s}'" for s in states)


class JobControlSQL(Tables):
    """The statements of :func:`cancel` and :func:`retry`."""

    @cached_property
    def job_state(self) -> str:
        return f"SELECT state FROM {self.jobs} WHERE id = %s"

    @cached_property
    def cancel(self) -> str:
        return (
            f"UPDATE {self.jobs} SET state = 'cancelled', finished_at = %(now)b,\n"
            f"    updated_at = %(now)b, {LEASE_FREE}\n"
            f"WHERE id = %(id)s AND state IN ({_sources_of(JobState.CANCELLED)})\n"
            f"RETURNING {JOB_SELECT}"
        )

    @cached_property
    def retry(self) -> str:
        # RUNNING -> PENDING is the shutdown release, never a manual retry.
        retry_from = _sources_of(JobState.PENDING, exclude=[JobState.RUNNING])
        return (
            f"WITH r AS (\n"
            f"    UPDATE {self.jobs} SET state = 'pending', attempt = 0, run_at = %(now)b,\n"
            f"        updated_at = %(now)b, finished_at = NULL, last_error = NULL\n"
            f"    WHERE id = %(id)s AND state IN ({retry_from})\n"
            f"    RETURNING {JOB_SELECT})\n"
            f"SELECT {JOB_SELECT}, (SELECT {self.notify}::text) FROM r"
        )


def _refused(q: JobControlSQL, job_id: str, target: JobState) -> Steps[None]:
    """Raise the error that explains why the conditional update of ``job_id`` to ``target``
    wrote nothing; return if the job may go there after all (it changed meanwhile)."""
    rows = yield Stmt(q.job_state, (job_id,), rows=True)
    if not rows:
        raise JobNotFoundError(job_id)
    state = JobState(rows[0][0])
    if target is JobState.PENDING and state is JobState.RUNNING:
        # RUNNING -> PENDING is the shutdown release, never a manual retry.
        raise InvalidTransitionError(job_id, "running", "pending", "the job is running")
    check_transition(job_id, state, target)


def cancel(q: JobControlSQL, job_id: str, *, now: datetime) -> Steps[Job]:
    """See :meth:`dispatch_core.store.Store.cancel`: one conditional update (a read only to
    explain a refusal)."""
    for _ in range(5):
        rows = yield Stmt(q.cancel, {"id": job_id, "now": aware(now)}, rows=True)
        if rows:
            return decode_job(rows[0])
        yield from _refused(q, job_id, JobState.CANCELLED)
    raise InvalidTransitionError(job_id, "?", "cancelled", "the job keeps changing state")


def retry(q: JobControlSQL, job_id: str, *, now: datetime) -> Steps[Job]:
    """See :meth:`dispatch_core.store.Store.retry`; wakes the listeners."""
    for _ in range(5):
        rows = yield Stmt(q.retry, {"id": job_id, "now": aware(now)}, rows=True)
        if rows:
            return decode_job(rows[0][:NCOLS])  # the last column is the notify
        yield from _refused(q, job_id, JobState.PENDING)
    raise InvalidTransitionError(job_id, "?", "pending", "the job keeps changing state")


class JobsSQL(EnqueueSQL, JobReadSQL, JobCountSQL, JobControlSQL):
    """Every statement of this module."""
