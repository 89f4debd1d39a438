"""Durable workflows: create_run, get_run, list_runs, list_steps, save_step, update_run,
set_run_version, send_event and take_event."""

from __future__ import annotations

from datetime import datetime
from functools import cached_property
from typing import cast

import attrs

from dispatch_core.errors import RunNotFoundError
from dispatch_core.models import JSON, NewJob, SortOrder
from dispatch_core.storekit import STORE_SECTIONS
from dispatch_core.workflows.models import (
    TERMINAL_RUN_STATES,
    NewEvent,
    NewRun,
    RunFilter,
    RunState,
    StepRecord,
    WorkflowEvent,
    WorkflowRun,
)
from dispatch_plugins.postgres.codec import (
    EVENT_SELECT,
    RUN_COLUMNS,
    RUN_SELECT,
    STEP_COLUMNS,
    STEP_SELECT,
    aware,
    clean_text,
    decode_event,
    decode_run,
    decode_step,
    encode_input,
    encode_result,
    run_from_new,
    step_params,
)
from dispatch_plugins.postgres.ops.common import (
    TRANSACTION,
    ListingSQL,
    Steps,
    Stmt,
    Tables,
    given,
    listing,
)
from dispatch_plugins.postgres.ops.jobs import EnqueueSQL, enqueue
from dispatch_plugins.postgres.schema import KEY_SCOPE

__all__ = [
    "RunSQL",
    "StepSQL",
    "RunUpdateSQL",
    "RunLockSQL",
    "RunStateSQL",
    "EventSQL",
    "TakeEventSQL",
    "RunVersionSQL",
    "WorkflowsSQL",
    *STORE_SECTIONS["workflows"],
]

#: Parking states: entering one increments the run's generation.
_PARKED = frozenset({RunState.SLEEPING, RunState.WAITING})
#: What ``update_run(expect=None)`` accepts.
_NON_TERMINAL = frozenset(RunState) - TERMINAL_RUN_STATES


# -- runs ---------------------------------------------------------------------------------------


class RunSQL(EnqueueSQL, ListingSQL):
    """The statements of :func:`create_run`, :func:`get_run` and :func:`list_runs`."""

    @cached_property
    def insert_run(self) -> str:
        return (
            f"INSERT INTO {self.runs} (id, name, version, input, state, created_at, updated_at,\n"
            "    tenant, parent_run_id, correlation_key)\n"
            "VALUES (%(id)s, %(name)s, %(version)s, %(input)s::jsonb, 'running', %(now)b,\n"
            "        %(now)b, %(tenant)s, %(parent_run_id)s, %(correlation_key)s)\n"
            # A taken id writes nothing (and waits for a concurrent insert of it to end).
            "ON CONFLICT (id) DO NOTHING\n"
            "RETURNING id"
        )

    @cached_property
    def get_run(self) -> str:
        return f"SELECT {RUN_SELECT} FROM {self.runs} WHERE id = %s"

    def list_runs(self, columns: tuple[str, ...], after: bool, order: SortOrder) -> str:
        """Workflow runs as :meth:`~dispatch_plugins.postgres.ops.jobs.JobReadSQL.list_jobs`
        pages jobs."""
        return self.page(f"SELECT {RUN_SELECT} FROM {self.runs}", columns, after, order)


def create_run(q: RunSQL, run: NewRun, driver: NewJob) -> Steps[WorkflowRun]:
    """See :meth:`dispatch_core.store.Store.create_run`: the run and its first driver job in
    one transaction; ``INSERT ... ON CONFLICT (id) DO NOTHING RETURNING``, and the driver only
    when the run was inserted, else the stored run."""
    params = {
        "id": run.id,
        "name": run.name,
        "version": run.version,
        "input": encode_input(run.input, run.name),
        "now": aware(run.created_at),
        "tenant": run.tenant,
        "parent_run_id": run.parent_run_id,
        "correlation_key": run.correlation_key,
    }
    yield TRANSACTION
    while True:
        inserted = yield Stmt(q.insert_run, params, rows=True)
        if inserted:
            yield from enqueue(q, [driver])
            return run_from_new(run)
        # The id is taken: the stored run, read by a new statement (which sees a concurrent
        # insert of it that the conflict waited for). Gone again (pruned): insert once more.
        rows = yield Stmt(q.get_run, (run.id,), rows=True)
        if rows:
            return decode_run(rows[0])


def get_run(q: RunSQL, run_id: str) -> Steps[WorkflowRun]:
    """See :meth:`dispatch_core.store.Store.get_run`."""
    rows = yield Stmt(q.get_run, (run_id,), rows=True)
    if not rows:
        raise RunNotFoundError(run_id)
    return decode_run(rows[0])


_RUN_BODIES = ("input", "output")


def list_runs(q: RunSQL, filter: RunFilter) -> Steps[list[WorkflowRun]]:
    """See :meth:`dispatch_core.store.Store.list_runs`."""
    columns, params = given(
        ("state", None if filter.state is None else filter.state.value),
        ("name", filter.name),
        ("tenant", filter.tenant),
        ("parent_run_id", filter.parent_run_id),
        ("correlation_key", filter.correlation_key),
    )
    sql = q.list_runs(columns, filter.after is not None, filter.order)
    return (yield from listing(q, sql, params, filter, RUN_COLUMNS, _RUN_BODIES, decode_run))


# -- history ------------------------------------------------------------------------------------


class StepSQL(Tables):
    """The statements of :func:`list_steps` and :func:`save_step`."""

    @cached_property
    def list_steps(self) -> str:
        return f"SELECT {STEP_SELECT} FROM {self.steps} WHERE run_id = %s ORDER BY seq"

    @cached_property
    def get_step(self) -> str:
        return f"SELECT {STEP_SELECT} FROM {self.steps} WHERE run_id = %s AND seq = %s"

    @cached_property
    def save_step(self) -> str:
        """Inserted only for an existing run; a pending record is replaced, a finished one is
        left alone (then nothing comes back and the caller reads the stored one)."""
        return (
            f"INSERT INTO {self.steps} AS t (run_id, {', '.join(STEP_COLUMNS)})\n"
            "SELECT %(run_id)s::text, %(seq)s::int4, %(name)s::text, %(kind)s::text,\n"
            "       %(state)s::text, %(started_at)b::timestamptz, %(finished_at)b::timestamptz,\n"
            "       %(output)s::jsonb, %(error)s::text, %(attempts)s::int4,\n"
            "       %(wake_at)b::timestamptz\n"
            f"WHERE EXISTS (SELECT 1 FROM {self.runs} WHERE id = %(run_id)s)\n"
            "ON CONFLICT (run_id, seq) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in STEP_COLUMNS[1:])
            + "\nWHERE t.state = 'pending'\n"
            f"RETURNING {', '.join(f't.{c}' for c in STEP_COLUMNS)}"
        )


def list_steps(q: StepSQL, run_id: str) -> Steps[list[StepRecord]]:
    """See :meth:`dispatch_core.store.Store.list_steps`."""
    rows = yield Stmt(q.list_steps, (run_id,), rows=True)
    return [decode_step(row) for row in rows]


def save_step(q: StepSQL, run_id: str, step: StepRecord, *, now: datetime) -> Steps[StepRecord]:
    """See :meth:`dispatch_core.store.Store.save_step`: one upsert that never touches a
    finished record; when it writes nothing, a read returns the stored record (a new
    statement, so it sees one that a concurrent driver has just committed)."""
    rows = yield Stmt(q.save_step, step_params(run_id, step), rows=True)
    if rows:
        return decode_step(rows[0])
    rows = yield Stmt(q.get_step, (run_id, step.seq), rows=True)
    if not rows:  # no such run (a record is never deleted while its run exists)
        raise RunNotFoundError(run_id)
    return decode_step(rows[0])


# -- run state ----------------------------------------------------------------------------------


class RunUpdateSQL(EnqueueSQL):
    """The updates of :func:`update_run` (which takes :class:`RunLockSQL`'s lock first)."""

    @cached_property
    def _update_run(self) -> str:
        return (
            f"UPDATE {self.runs} SET state = %(state)s, output = %(output)s::jsonb,\n"
            "    error = %(error)s, wake_at = %(wake_at)b, waiting_for = %(waiting_for)s,\n"
            "    updated_at = %(now)b, finished_at = %(finished_at)b,\n"
            "    generation = generation + %(bump)s\n"
            "WHERE id = %(id)s"
        )

    @cached_property
    def update_run(self) -> str:
        return f"{self._update_run}\nRETURNING {RUN_SELECT}"

    @cached_property
    def park_waiting(self) -> str:
        """Parking as waiting: refused when an awaited event has already arrived."""
        unconsumed = (
            f"SELECT 1 FROM {self.events} AS e "
            "WHERE e.run_id = %(id)s AND e.name = %(waiting_for)s\n"
            "      AND e.consumed_seq IS NULL"
        )
        return f"{self._update_run} AND NOT EXISTS (\n    {unconsumed}\n)\nRETURNING {RUN_SELECT}"


def update_run(
    q: RunStateSQL,
    run_id: str,
    *,
    state: RunState,
    now: datetime,
    expect: frozenset[RunState] | None = None,
    generation: int | None = None,
    output: object = None,
    error: str | None = None,
    wake_at: datetime | None = None,
    waiting_for: str | None = None,
    driver: NewJob | None = None,
) -> Steps[WorkflowRun | None]:
    """See :meth:`dispatch_core.store.Store.update_run`.

    One transaction: ``SELECT ... FOR UPDATE`` of the run's row, the conditions checked on
    the row as it is then, the update (for a wait, only if no awaited event is there: a new
    statement, which sees every event whose sender held the lock before), the driver job.
    """
    now = aware(now)
    yield TRANSACTION
    rows = yield Stmt(q.lock_run, (run_id,), rows=True)
    if not rows:
        raise RunNotFoundError(run_id)
    current, current_generation = RunState(rows[0][0]), rows[0][1]
    if current not in (expect if expect is not None else _NON_TERMINAL):
        return None
    if generation is not None and generation != current_generation:
        return None
    params = {
        "id": run_id,
        "state": state.value,
        "output": encode_result(cast(JSON, output)),
        "error": clean_text(error),
        "wake_at": None if wake_at is None else aware(wake_at),
        "waiting_for": waiting_for,
        "now": now,
        "finished_at": now if state in TERMINAL_RUN_STATES else None,
        "bump": 1 if state in _PARKED else 0,
    }
    waits = state is RunState.WAITING and waiting_for is not None
    rows = yield Stmt(q.park_waiting if waits else q.update_run, params, rows=True)
    if not rows:  # the awaited event has arrived: the caller takes it instead
        return None
    if driver is not None:
        yield from enqueue(q, [driver])
    return decode_run(rows[0])


class RunLockSQL(Tables):
    """The run's row lock, which :func:`update_run` and :func:`send_event` take first."""

    @cached_property
    def lock_run(self) -> str:
        """The run's row lock serialises every decision about the run (park, wake, take):
        each later statement of the transaction sees what the previous holders committed."""
        return (
            "SELECT state, generation, tenant, waiting_for "
            f"FROM {self.runs} WHERE id = %s FOR UPDATE"
        )


class RunStateSQL(RunUpdateSQL, RunLockSQL):
    """The statements of :func:`update_run`."""


# -- events -------------------------------------------------------------------------------------


class EventSQL(EnqueueSQL, RunLockSQL):
    """The statements of :func:`send_event`."""

    @cached_property
    def insert_event(self) -> str:
        return (
            f"INSERT INTO {self.events} (id, run_id, name, payload, created_at, tenant)\n"
            "VALUES (%s, %s, %s, %s::jsonb, %b, %s)"
        )

    @cached_property
    def wake_run(self) -> str:
        """The wake-up: the run runs again, and its pending wake-up job (the wait's timeout
        timer) is made due; the caller inserts the driver when none came back."""
        return (
            f"WITH r AS (\n"
            f"    UPDATE {self.runs} SET state = 'running', waiting_for = NULL, wake_at = NULL,\n"
            "        updated_at = %(now)b\n"
            "    WHERE id = %(id)s\n"
            "), u AS (\n"
            f"    UPDATE {self.jobs} SET run_at = %(now)b, updated_at = %(now)b\n"
            "    WHERE unique_key = %(key)s AND state = 'pending'\n"
            f"      AND {KEY_SCOPE} = coalesce('=' || %(tenant)s::text, '')\n"
            "    RETURNING id\n"
            ")\n"
            f"SELECT id, (SELECT {self.notify}::text) FROM u"
        )


def send_event(q: EventSQL, event: NewEvent, *, driver: NewJob, now: datetime) -> Steps[bool]:
    """See :meth:`dispatch_core.store.Store.send_event`.

    One transaction: ``SELECT ... FOR UPDATE`` of the run's row (so a park and a send take
    turns), the event, then for a run waiting for it the wake-up: the run's state and its
    pending wake-up job in one statement, or the driver when there is no such job.
    """
    now = aware(now)
    yield TRANSACTION
    rows = yield Stmt(q.lock_run, (event.run_id,), rows=True)
    if not rows or rows[0][2] != event.tenant:
        raise RunNotFoundError(event.run_id)
    state, generation, _, waiting_for = rows[0]
    yield Stmt(
        q.insert_event,
        (
            event.id,
            event.run_id,
            event.name,
            encode_input(event.payload, event.name),
            aware(event.created_at),
            event.tenant,
        ),
    )
    if state != RunState.WAITING.value or waiting_for != event.name:
        return False
    key = f"wf:{event.run_id}:{generation}"
    # The park's key in the run's tenant (the event's, checked above), where its drivers hold it.
    params = {"id": event.run_id, "now": now, "key": key, "tenant": event.tenant}
    rows = yield Stmt(q.wake_run, params, rows=True)
    if not rows:  # no pending timer: the driver, under the park's key
        yield from enqueue(q, [attrs.evolve(driver, unique_key=key)])
    return True


class TakeEventSQL(Tables):
    """The statements of :func:`take_event`."""

    @cached_property
    def lock_run_for_take(self) -> str:
        return f"SELECT 1 FROM {self.runs} WHERE id = %s FOR NO KEY UPDATE"

    @cached_property
    def take_event(self) -> str:
        """The event a seq has already consumed (a replay: there is one at most, as takers of
        a run take turns), else the oldest unconsumed one, taken by a row-locking update that
        skips rows another taker holds."""
        return f"""
WITH prev AS (
    SELECT {EVENT_SELECT} FROM {self.events}
    WHERE run_id = %(id)s AND consumed_seq = %(seq)s AND name = %(name)s
    LIMIT 1
), took AS (
    UPDATE {self.events} SET consumed_seq = %(seq)s, consumed_at = %(now)b
    WHERE id = (
        SELECT id FROM {self.events}
        WHERE run_id = %(id)s AND name = %(name)s AND consumed_seq IS NULL
          AND NOT EXISTS (SELECT 1 FROM prev)
        ORDER BY created_at, id LIMIT 1
        FOR UPDATE SKIP LOCKED)
    RETURNING {EVENT_SELECT}
)
SELECT * FROM prev UNION ALL SELECT * FROM took
"""


def take_event(
    q: TakeEventSQL, run_id: str, name: str, *, seq: int, now: datetime
) -> Steps[WorkflowEvent | None]:
    """See :meth:`dispatch_core.store.Store.take_event`.

    Under the run's row lock (``FOR NO KEY UPDATE``: takers of one run take turns, so two
    replays of one wait agree on its event, while history writes go on), one statement returns
    the event ``seq`` has consumed, or consumes the oldest unconsumed one with an ``UPDATE ...
    WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``.
    """
    yield TRANSACTION
    locked = yield Stmt(q.lock_run_for_take, (run_id,), rows=True)
    if not locked:
        return None
    rows = yield Stmt(
        q.take_event, {"id": run_id, "name": name, "seq": seq, "now": aware(now)}, rows=True
    )
    return decode_event(rows[0]) if rows else None


# -- the run's version --------------------------------------------------------------------------


class RunVersionSQL(Tables):
    """The statements of :func:`set_run_version`."""

    @cached_property
    def set_run_version(self) -> str:
        """One conditional update: the row lock it takes orders it with every other writer."""
        terminal = ", ".join(f"'{state.value}'" for state in sorted(TERMINAL_RUN_STATES))
        return (
            f"UPDATE {self.runs} SET version = %(version)s, updated_at = %(now)b\n"
            "WHERE id = %(id)s AND generation = %(generation)s\n"
            f"  AND state NOT IN ({terminal})\n"
            f"RETURNING {RUN_SELECT}"
        )

    @cached_property
    def run_exists(self) -> str:
        return f"SELECT 1 FROM {self.runs} WHERE id = %s"


def set_run_version(
    q: RunVersionSQL, run_id: str, version: int, *, generation: int, now: datetime
) -> Steps[WorkflowRun | None]:
    """See :meth:`dispatch_core.store.Store.set_run_version`: one conditional ``UPDATE ...
    RETURNING``; when it writes nothing, a read tells an unknown run from a failed
    condition."""
    params = {"id": run_id, "version": version, "generation": generation, "now": aware(now)}
    rows = yield Stmt(q.set_run_version, params, rows=True)
    if rows:
        return decode_run(rows[0])
    exists = yield Stmt(q.run_exists, (run_id,), rows=True)
    if not exists:
        raise RunNotFoundError(run_id)
    return None


class WorkflowsSQL(RunSQL, StepSQL, RunStateSQL, EventSQL, TakeEventSQL, RunVersionSQL):
    """Every statement of this module."""
