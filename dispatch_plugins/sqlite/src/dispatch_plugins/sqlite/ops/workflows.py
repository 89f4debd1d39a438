"""Durable workflows: runs, their step history, and the events they wait for.

Every write that decides on a run's state runs under ``BEGIN IMMEDIATE``: SQLite's single
writer then serialises a park (:func:`update_run`) and an event (:func:`send_event`) on one
run, so the check "has the event already arrived?" and the park cannot interleave with the
event's insert.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import cast

import attrs

from dispatch_core.errors import RunNotFoundError
from dispatch_core.models import JSON, NewJob
from dispatch_core.storekit import STORE_SECTIONS
from dispatch_core.workflows.models import (
    TERMINAL_RUN_STATES,
    NewEvent,
    NewRun,
    RunFilter,
    RunState,
    StepRecord,
    StepState,
    WorkflowEvent,
    WorkflowRun,
)
from dispatch_plugins.sqlite.codec import (
    EVENT_SELECT,
    RUN_COLUMNS,
    RUN_SELECT,
    STEP_COLUMNS,
    STEP_SELECT,
    decode_event,
    decode_run,
    decode_step,
    dump_json,
    dump_json_opt,
    new_run_params,
    step_params,
    to_us,
)
from dispatch_plugins.sqlite.connection import write_transaction
from dispatch_plugins.sqlite.ops.common import (
    insert_job,
    keyset_page,
    list_previewed,
    marks,
    where_equal,
)
from dispatch_plugins.sqlite.schema import KEY_SCOPE

__all__ = [*STORE_SECTIONS["workflows"]]

# A run whose id is taken is not written (DO NOTHING returns no row): the stored one stands.
_INSERT_RUN = f"""
INSERT INTO workflow_runs ({RUN_SELECT}) VALUES ({marks(len(RUN_COLUMNS))})
ON CONFLICT (id) DO NOTHING
RETURNING {RUN_SELECT}
"""
_GET_RUN = f"SELECT {RUN_SELECT} FROM workflow_runs WHERE id = ?"


def create_run(conn: sqlite3.Connection, run: NewRun, driver: NewJob) -> WorkflowRun:
    """See :meth:`dispatch_core.store.Store.create_run`.

    One ``BEGIN IMMEDIATE`` transaction inserts the run and its driver; when the id exists
    already, neither is written and the stored run is returned.
    """
    with write_transaction(conn):
        row = conn.execute(_INSERT_RUN, new_run_params(run)).fetchone()
        if row is None:  # created before (a replay): the first creation stands
            return decode_run(conn.execute(_GET_RUN, (run.id,)).fetchone())
        created = decode_run(row)
        insert_job(conn, driver)
    return created


def get_run(conn: sqlite3.Connection, run_id: str) -> WorkflowRun:
    """See :meth:`dispatch_core.store.Store.get_run`."""
    row = conn.execute(_GET_RUN, (run_id,)).fetchone()
    if row is None:
        raise RunNotFoundError(run_id)
    return decode_run(row)


# The bodies a listing with previews cuts short.
_RUN_BODIES = ("input", "output")


def list_runs(conn: sqlite3.Connection, filter: RunFilter) -> list[WorkflowRun]:
    """See :meth:`dispatch_core.store.Store.list_runs`."""
    conditions, params = where_equal(
        (
            ("state", None if filter.state is None else filter.state.value),
            ("name", filter.name),
            ("tenant", filter.tenant),
            ("parent_run_id", filter.parent_run_id),
            ("correlation_key", filter.correlation_key),
        )
    )
    if filter.preview is not None:
        return list_previewed(
            conn,
            "workflow_runs",
            RUN_COLUMNS,
            _RUN_BODIES,
            decode_run,
            filter,
            conditions,
            params,
        )
    sql, params = keyset_page(
        f"SELECT {RUN_SELECT} FROM workflow_runs",
        conditions,
        params,
        after=filter.after,
        order=filter.order,
        limit=filter.limit,
        offset=filter.offset,
    )
    return [decode_run(row) for row in conn.execute(sql, params).fetchall()]


def list_steps(conn: sqlite3.Connection, run_id: str) -> list[StepRecord]:
    """See :meth:`dispatch_core.store.Store.list_steps`."""
    rows = conn.execute(
        f"SELECT {STEP_SELECT} FROM workflow_steps WHERE run_id = ? ORDER BY seq", (run_id,)
    ).fetchall()
    return [decode_step(row) for row in rows]


# A new seq is inserted; an existing pending record is replaced; a finished one is left alone
# (the WHERE of DO UPDATE fails, so nothing comes back and the caller reads the stored row).
_SAVE_STEP = f"""
INSERT INTO workflow_steps ({STEP_SELECT}) VALUES ({marks(len(STEP_COLUMNS))})
ON CONFLICT (run_id, seq) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in STEP_COLUMNS[2:])}
WHERE workflow_steps.state = '{StepState.PENDING.value}'
RETURNING {STEP_SELECT}
"""


def _run_exists(conn: sqlite3.Connection, run_id: str) -> None:
    if conn.execute("SELECT 1 FROM workflow_runs WHERE id = ?", (run_id,)).fetchone() is None:
        raise RunNotFoundError(run_id)


def save_step(
    conn: sqlite3.Connection, run_id: str, step: StepRecord, *, now: datetime
) -> StepRecord:
    """See :meth:`dispatch_core.store.Store.save_step`."""
    with write_transaction(conn):
        _run_exists(conn, run_id)
        row = conn.execute(_SAVE_STEP, step_params(run_id, step)).fetchone()
        if row is None:  # finished already: the first writer's record stands
            row = conn.execute(
                f"SELECT {STEP_SELECT} FROM workflow_steps WHERE run_id = ? AND seq = ?",
                (run_id, step.seq),
            ).fetchone()
    return decode_step(row)


_PARKED = frozenset({RunState.SLEEPING, RunState.WAITING})
# An event of that name the run has not consumed yet.
_EVENT_WAITING = """
SELECT 1 FROM workflow_events WHERE run_id = ? AND name = ? AND consumed_seq IS NULL LIMIT 1
"""
_UPDATE_RUN = f"""
UPDATE workflow_runs SET state = :state, output = :output, error = :error, wake_at = :wake_at,
    waiting_for = :waiting_for, updated_at = :now, finished_at = :finished_at,
    generation = generation + :parked
WHERE id = :id
RETURNING {RUN_SELECT}
"""


def update_run(
    conn: sqlite3.Connection,
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
) -> WorkflowRun | None:
    """See :meth:`dispatch_core.store.Store.update_run`.

    One ``BEGIN IMMEDIATE`` transaction reads the run, checks the condition (and, for a wait,
    that its event has not arrived yet), writes the run and enqueues ``driver``.
    """
    now_us = to_us(now)
    with write_transaction(conn):
        row = conn.execute(
            "SELECT state, generation FROM workflow_runs WHERE id = ?", (run_id,)
        ).fetchone()
        if row is None:
            raise RunNotFoundError(run_id)
        current, current_generation = RunState(row[0]), row[1]
        if (current in TERMINAL_RUN_STATES) if expect is None else (current not in expect):
            return None
        if generation is not None and current_generation != generation:
            return None
        if (
            state is RunState.WAITING
            and waiting_for is not None
            and conn.execute(_EVENT_WAITING, (run_id, waiting_for)).fetchone() is not None
        ):
            return None  # the event is here: the caller takes it instead of parking
        params = {
            "id": run_id,
            "state": state.value,
            "output": dump_json_opt(cast(JSON, output)),
            "error": error,
            "wake_at": None if wake_at is None else to_us(wake_at),
            "waiting_for": waiting_for,
            "now": now_us,
            "finished_at": now_us if state in TERMINAL_RUN_STATES else None,
            "parked": int(state in _PARKED),
        }
        updated = decode_run(conn.execute(_UPDATE_RUN, params).fetchone())
        if driver is not None:
            insert_job(conn, driver)
    return updated


_TERMINAL_RUN_VALUES = ", ".join(f"'{state.value}'" for state in sorted(TERMINAL_RUN_STATES))
# The compare-and-set on the generation; a terminal run is left alone.
_SET_RUN_VERSION = f"""
UPDATE workflow_runs SET version = ?, updated_at = ?
WHERE id = ? AND generation = ? AND state NOT IN ({_TERMINAL_RUN_VALUES})
RETURNING {RUN_SELECT}
"""


def set_run_version(
    conn: sqlite3.Connection, run_id: str, version: int, *, generation: int, now: datetime
) -> WorkflowRun | None:
    """See :meth:`dispatch_core.store.Store.set_run_version`.

    One ``BEGIN IMMEDIATE`` transaction: a conditional ``UPDATE``; when it matches nothing,
    the run is looked up only to tell an unknown run (an error) from a failed condition.
    """
    with write_transaction(conn):
        row = conn.execute(_SET_RUN_VERSION, (version, to_us(now), run_id, generation)).fetchone()
        if row is None:
            _run_exists(conn, run_id)
            return None
    return decode_run(row)


_INSERT_EVENT = """
INSERT INTO workflow_events (id, run_id, name, payload, created_at, tenant)
VALUES (?, ?, ?, ?, ?, ?)
"""
# The woken run is running again: nothing to wait for, no timer.
_WAKE_RUN = """
UPDATE workflow_runs SET state = 'running', waiting_for = NULL, wake_at = NULL, updated_at = ?
WHERE id = ?
"""
# The wait's timeout timer, made due now (a running or finished one is left alone): the
# park's key in the run's tenant, where its drivers hold it.
_MAKE_DUE = f"""
UPDATE jobs SET run_at = ?, updated_at = ?
WHERE unique_key = ? AND {KEY_SCOPE} = coalesce('=' || ?, '') AND state = 'pending'
"""


def send_event(conn: sqlite3.Connection, event: NewEvent, *, driver: NewJob, now: datetime) -> bool:
    """See :meth:`dispatch_core.store.Store.send_event`.

    One ``BEGIN IMMEDIATE`` transaction: it stores the event and, when the run waits for it,
    wakes the run and makes its wake-up job due (the pending timeout timer, else ``driver``).
    """
    now_us = to_us(now)
    with write_transaction(conn):
        row = conn.execute(
            "SELECT tenant, state, waiting_for, generation FROM workflow_runs WHERE id = ?",
            (event.run_id,),
        ).fetchone()
        if row is None or row[0] != event.tenant:
            raise RunNotFoundError(event.run_id)
        _, state, waiting_for, generation = row
        conn.execute(
            _INSERT_EVENT,
            (
                event.id,
                event.run_id,
                event.name,
                dump_json(event.payload),
                to_us(event.created_at),
                event.tenant,
            ),
        )
        if state != RunState.WAITING.value or waiting_for != event.name:
            return False
        conn.execute(_WAKE_RUN, (now_us, event.run_id))
        key = f"wf:{event.run_id}:{generation}"
        if conn.execute(_MAKE_DUE, (now_us, now_us, key, event.tenant)).rowcount == 0:
            # No pending timer: the driver, under the park's key (skipped if the key is taken:
            # a job of this park is already running or done, and the run is driven).
            insert_job(conn, attrs.evolve(driver, unique_key=key))
    return True


_EVENT_BY_SEQ = f"""
SELECT {EVENT_SELECT} FROM workflow_events WHERE run_id = ? AND name = ? AND consumed_seq = ?
LIMIT 1
"""
_TAKE_EVENT = f"""
UPDATE workflow_events SET consumed_seq = ?
WHERE rowid = (
    SELECT rowid FROM workflow_events
    WHERE run_id = ? AND name = ? AND consumed_seq IS NULL
    ORDER BY created_at, rowid LIMIT 1
)
RETURNING {EVENT_SELECT}
"""


def take_event(
    conn: sqlite3.Connection, run_id: str, name: str, *, seq: int, now: datetime
) -> WorkflowEvent | None:
    """See :meth:`dispatch_core.store.Store.take_event`.

    The replay lookup and the take run in one write transaction, so two drivers taking for one
    seq at once get the same event rather than one each.
    """
    with write_transaction(conn):
        row = conn.execute(_EVENT_BY_SEQ, (run_id, name, seq)).fetchone()
        if row is None:
            row = conn.execute(_TAKE_EVENT, (seq, run_id, name)).fetchone()
    return None if row is None else decode_event(row)
