"""The workflow the workflow chaos test runs in real ``dispatch worker`` processes.

Environment (set by the test for each worker process, which imports this module as
``tests.chaos.chaos_workflow_app`` from the repository root):

* ``CHAOS_URL``: the Dispatch store URL.
* ``CHAOS_LEDGER``: where step executions are recorded (``sqlite:///<file>`` or a
  ``postgresql://`` URL), in the test's own table, outside Dispatch.
* ``CHAOS_SEED``: seeds each step's run time, so a run can be replayed.

The workflow does four steps, a durable sleep and a wait for an event. Every real execution of
a step function (a replay that skips a checkpointed step runs nothing) writes a ledger row when
it starts and stamps ``finished_at`` when it ends; the step returns the row's id, so the run's
output names the execution whose result was checkpointed.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, TypeVar

from dispatch_core import Engine, Workflow

from .chaos_app import Ledger

__all__ = [
    "EVENT",
    "EVENT_TIMEOUT",
    "QUEUE",
    "SLEEP",
    "SLEEP_SECONDS",
    "STEPS",
    "WORKFLOW",
    "StepEntry",
    "StepLedger",
    "event_payload",
    "expected_output",
    "make_engine",
    "step_seconds",
    "step_value",
]

T = TypeVar("T")

WORKFLOW = "chaos.workflow"
QUEUE = "chaos-wf"
#: The steps, in the order the handler calls them.
STEPS = ("reserve", "charge", "pack", "ship")
SLEEP = "cool-off"
SLEEP_SECONDS = 1.5
EVENT = "go"
#: Long enough that only a lost event (not a slow one) times the wait out.
EVENT_TIMEOUT = 60.0

_COLUMNS = "exec_id, run_id, step, pid, started_at, finished_at"


class StepEntry(NamedTuple):
    """One execution of a step function (times are ``time.time()``)."""

    exec_id: str
    run_id: str
    step: str
    pid: int
    started_at: float
    #: ``None`` when the execution never ended (its process was killed).
    finished_at: float | None


def step_seconds(seed: int, n: int, step: str) -> float:
    """How long step ``step`` of run ``n`` takes: 150-400 ms, fixed by the seed."""
    return random.Random(f"{seed}:{n}:{step}").uniform(0.15, 0.4)


def event_payload(n: int) -> str:
    """The event the test sends to run ``n``."""
    return f"go-{n}"


def step_value(step: str, n: int, event: str | None = None) -> str:
    return f"{step}-{n}" if event is None else f"{step}-{n}:{event}"


def expected_output(n: int) -> dict[str, Any]:
    """Run ``n``'s output, but for the execution ids (``"execs"``)."""
    values = {s: step_value(s, n) for s in STEPS}
    values["ship"] = step_value("ship", n, event_payload(n))
    return {"n": n, "event": event_payload(n), "values": values}


class StepLedger(Ledger):
    """The chaos ledger's connections and retries, with a table of step executions."""

    def create(self) -> None:
        real = "REAL" if self.sqlite_path is not None else "DOUBLE PRECISION"
        ddl = (
            "CREATE TABLE IF NOT EXISTS chaos_wf_ledger ("
            "exec_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, step TEXT NOT NULL, "
            f"pid INTEGER NOT NULL, started_at {real} NOT NULL, finished_at {real})"
        )
        self._retrying(lambda conn: conn.execute(ddl))

    def start_step(self, run_id: str, step: str) -> str:
        """Record that an execution of ``step`` starts now; return its id."""
        exec_id = uuid.uuid4().hex
        m = self._mark
        sql = (
            f"INSERT INTO chaos_wf_ledger ({_COLUMNS}) VALUES ({m}, {m}, {m}, {m}, {m}, NULL) "
            "ON CONFLICT (exec_id) DO NOTHING"
        )
        row = (exec_id, run_id, step, os.getpid(), time.time())
        self._retrying(lambda conn: conn.execute(sql, row))
        return exec_id

    def finish_step(self, exec_id: str) -> None:
        m = self._mark
        sql = f"UPDATE chaos_wf_ledger SET finished_at = {m} WHERE exec_id = {m}"
        now = time.time()
        self._retrying(lambda conn: conn.execute(sql, (now, exec_id)))

    def entries(self) -> list[StepEntry]:
        sql = f"SELECT {_COLUMNS} FROM chaos_wf_ledger ORDER BY started_at, exec_id"
        rows = self._retrying(lambda conn: conn.execute(sql).fetchall())
        return [StepEntry(*row) for row in rows]


def make_engine(url: str, *, ledger: str | None = None, seed: int = 0) -> Engine:
    """An engine with the chaos workflow; with a ``ledger`` URL, its steps record there (the
    test process registers the workflow only to start runs)."""
    engine = Engine(url)
    book = StepLedger(ledger) if ledger is not None else None
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="chaos-wf-ledger")

    async def call(fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def run_step(run_id: str, step: str, n: int, event: str | None = None) -> dict[str, str]:
        if book is None:
            raise RuntimeError("chaos workflow steps run only in a worker with CHAOS_LEDGER")
        exec_id = await call(book.start_step, run_id, step)
        await asyncio.sleep(step_seconds(seed, n, step))
        await call(book.finish_step, exec_id)
        return {"value": step_value(step, n, event), "exec": exec_id}

    @engine.workflow(name=WORKFLOW, queue=QUEUE)
    async def chaos_workflow(wf: Workflow, n: int) -> dict[str, Any]:
        done: dict[str, dict[str, str]] = {}
        for step in STEPS[:2]:
            done[step] = await wf.step(step, run_step, wf.run_id, step, n)
        await wf.sleep(SLEEP, SLEEP_SECONDS)
        done["pack"] = await wf.step("pack", run_step, wf.run_id, "pack", n)
        event = await wf.wait_for_event(EVENT, timeout=EVENT_TIMEOUT)
        done["ship"] = await wf.step("ship", run_step, wf.run_id, "ship", n, event)
        return {
            "n": n,
            "event": event,
            "values": {s: r["value"] for s, r in done.items()},
            "execs": {s: r["exec"] for s, r in done.items()},
        }

    return engine


def __getattr__(name: str) -> Engine:
    # `dispatch worker tests.chaos.chaos_workflow_app:engine` builds the engine from the
    # environment on first use; importing the module (as the test does) builds nothing.
    if name != "engine":
        raise AttributeError(name)
    engine = make_engine(
        os.environ["CHAOS_URL"],
        ledger=os.environ["CHAOS_LEDGER"],
        seed=int(os.environ.get("CHAOS_SEED", "0")),
    )
    globals()["engine"] = engine
    return engine
