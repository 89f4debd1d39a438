"""Durable workflows: create_run, get_run, list_runs, list_steps, save_step, update_run,
set_run_version, send_event and take_event. Each operation runs the script of its name in
``lua/``; the reads are plain commands or ``lua/page.lua``."""

from __future__ import annotations

from datetime import datetime

from dispatch_core.errors import JobIdTakenError, RunNotFoundError
from dispatch_core.models import NewJob, utcnow
from dispatch_core.storekit import STORE_SECTIONS
from dispatch_core.workflows.models import (
    NewEvent,
    NewRun,
    RunFilter,
    RunState,
    StepRecord,
    WorkflowEvent,
    WorkflowRun,
)
from dispatch_plugins.redis import codec as c
from dispatch_plugins.redis.ops import common
from dispatch_plugins.redis.ops.common import Runner, page, previewed

__all__ = [*STORE_SECTIONS["workflows"]]


# -- runs: lua/create_run.lua, a plain read, lua/page.lua ------------------------------------


async def create_run(s: Runner, run: NewRun, driver: NewJob) -> WorkflowRun:
    """Create the run and enqueue its driver in one script; the run already stored
    under that id when there is one."""
    pairs = c.run_pairs(run)
    res = await s._call(
        "create_run", c.us(utcnow()), run.id, str(len(pairs)), *pairs, *c.job_args([driver])
    )
    status = int(res[0])
    if status == -1:
        raise JobIdTakenError(res[1])
    if status == 0:
        return c.run_from(res[1])
    return c.run_from(pairs)


async def get_run(s: Runner, run_id: str) -> WorkflowRun:
    """The run ``run_id`` (one ``HGETALL``), or :class:`RunNotFoundError`."""
    key = s._key("run", run_id)
    h = await s._cmd(lambda cl: cl.hgetall(key))
    if not h:
        raise RunNotFoundError(run_id)
    return c.run_from([x for kv in h.items() for x in kv])


async def list_runs(s: Runner, filter: RunFilter) -> list[WorkflowRun]:
    """A page of runs, walking the smallest index that matches."""
    keys = []
    if filter.state is not None:
        keys.append(f"runs:s:{filter.state.value}")
    if filter.name is not None:
        keys.append(f"runs:n:{filter.name}")
    if filter.tenant is not None:
        keys.append(f"runs:t:{filter.tenant}")
    if filter.parent_run_id is not None:
        keys.append(f"runs:p:{filter.parent_run_id}")
    if filter.correlation_key is not None:
        keys.append(f"runs:c:{filter.correlation_key}")
    res = await page(
        s,
        base="runs",
        keys=keys,
        exclude=[],
        order=filter.order,
        after=filter.after,
        offset=filter.offset,
        limit=filter.limit,
        hash_prefix="run:",
        preview=filter.preview,
        bodies=("input", "output"),
    )
    return [previewed(flat, c.run_from) for flat in res]


# -- steps: HSCAN, lua/save_step.lua ---------------------------------------------------------


async def list_steps(s: Runner, run_id: str) -> list[StepRecord]:
    """The run's step records by ``seq``, read with ``HSCAN``."""
    raws = await s._scan("hscan", s._key("steps", run_id), count=common.WALK_CHUNK)
    steps = {st.seq: st for st in (c.step_from(raw) for raw in raws)}
    return sorted(steps.values(), key=lambda st: st.seq)


async def save_step(s: Runner, run_id: str, step: StepRecord, *, now: datetime) -> StepRecord:
    """Save the step record unless a finished one is there (then return that one)."""
    res = await s._call("save_step", run_id, str(step.seq), step.state.value, c.step_json(step))
    status = int(res[0])
    if status == -2:
        raise RunNotFoundError(run_id)
    return step if status == 1 else c.step_from(res[1])


# -- transitions: lua/update_run.lua, lua/set_run_version.lua --------------------------------


async def update_run(
    s: Runner,
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
    """Check the run's state and generation, refuse a park whose event is already there,
    write the run and enqueue its driver: one script."""
    drivers = [driver] if driver is not None else []
    res = await s._call(
        "update_run",
        c.us(now),
        run_id,
        state.value,
        "" if expect is None else ",".join(sorted(st.value for st in expect)) or ",",
        "" if generation is None else str(generation),
        c.opt_json(output),
        c.opt(error),
        "" if wake_at is None else "=" + c.us(wake_at),
        c.opt(waiting_for),
        str(len(drivers)),
        *c.job_args(drivers),
    )
    status = int(res[0])
    if status == -2:
        raise RunNotFoundError(run_id)
    if status == -1:
        raise JobIdTakenError(res[1])
    return None if status == 0 else c.run_from(res[1])


async def set_run_version(
    s: Runner, run_id: str, version: int, *, generation: int, now: datetime
) -> WorkflowRun | None:
    """Set the version of an unfinished run at ``generation``; ``None`` when it
    moved on."""
    res = await s._call("set_run_version", run_id, str(version), str(generation), c.us(now))
    status = int(res[0])
    if status == -2:
        raise RunNotFoundError(run_id)
    return None if status == 0 else c.run_from(res[1])


# -- events: lua/send_event.lua, lua/take_event.lua ------------------------------------------


async def send_event(s: Runner, event: NewEvent, *, driver: NewJob, now: datetime) -> bool:
    """Store the event and, if the run waits for it, wake the run and make its timer due
    (or enqueue ``driver``): one script."""
    res = await s._call(
        "send_event",
        c.us(now),
        event.run_id,
        event.id,
        event.name,
        c.us(event.created_at),
        c.opt(event.tenant),
        c.event_json(event),
        *c.job_args([driver]),
    )
    status = int(res[0])
    if status == -2:
        raise RunNotFoundError(event.run_id)
    if status == -1:
        raise JobIdTakenError(res[1])
    return status == 1


async def take_event(
    s: Runner, run_id: str, name: str, *, seq: int, now: datetime
) -> WorkflowEvent | None:
    """Consume the oldest event ``name`` for the step ``seq`` (the same one when asked
    again), or ``None``."""
    raw = await s._call("take_event", run_id, name, str(seq))
    return None if raw is None else c.event_from(raw, seq)
