"""Jobs no running worker takes: a worker's warnings about them.

A job enqueued under a name no running worker registers waits forever without a word. Each
worker checks now and then for such jobs in its queues and logs each name once, with what to
do; a drain names the jobs it left when it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from dispatch_core.models import RunnableCount, utcnow

if TYPE_CHECKING:
    from dispatch_core.worker import Worker

__all__ = ["UnhandledJobs"]

log = logging.getLogger("dispatch_core.worker")

#: Seconds after start of the first check for unhandled jobs: time for the workers started
#: with this one to register their names.
_UNHANDLED_FIRST_CHECK = 5.0
_NAMES_SHOWN = 20  # known job names listed in the unhandled-job warning


class UnhandledJobs:
    """One worker's checks for jobs no running worker takes.

    Args:
        worker: The worker that checks (its queues and names).
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        #: Job names already reported (once per name for the worker's life).
        self.warned: set[str] = set()

    async def run(self) -> None:
        """Warn, once per name, about jobs waiting in this worker's queues under a name no
        running worker registers: without a word they would wait forever."""
        w = self.worker
        await asyncio.sleep(min(_UNHANDLED_FIRST_CHECK, w.unhandled_check_interval))
        while True:
            try:
                rows = await w.engine.aunhandled_jobs()
            except Exception as exc:  # the store is down: the next check tries again
                log.debug("worker %s: checking for unhandled jobs failed (%s)", w.id, exc)
            else:
                self.warn(rows)
            await asyncio.sleep(w.unhandled_check_interval)

    def warn(self, rows: Sequence[RunnableCount]) -> None:
        """Log each name of ``rows`` this worker should know of and no worker runs, once."""
        w = self.worker
        by_name: dict[str, list[RunnableCount]] = {}
        for row in rows:
            # Its own names count as handled even if its row is missing (registration failed).
            if row.name in w.names or row.name in self.warned:
                continue
            if w.queues is not None and row.queue not in w.queues:
                continue  # a worker of that queue reports it
            by_name.setdefault(row.name, []).append(row)
        for name, found in by_name.items():
            self.warned.add(name)
            count = sum(r.count for r in found)
            log.warning(
                "worker %s: %s named %r %s in %s, and no running worker registers that name. "
                "This worker runs: %s. %s",
                w.id,
                _jobs(count),
                name,
                "waits" if count == 1 else "wait",
                _where(found),
                _name_list(w.names),
                _unhandled_hint(name, w.names),
            )

    async def warn_left_behind(self) -> None:
        """After a drain, name the runnable jobs it left because it has no handler for them."""
        w = self.worker
        try:
            rows = await w.bounded(
                w.engine.store.count_runnable(now=utcnow(), exclude_names=w.names)
            )
        except Exception as exc:
            log.debug("drain: counting the jobs it left failed (%s)", exc)
            return
        if w.queues is not None:
            rows = [r for r in rows if r.queue in w.queues]
        if not rows:
            return
        log.warning(
            "drain finished, leaving %s this engine has no handler for: %s. It runs: %s. "
            "They were enqueued under names no handler here registers (another app's jobs, "
            "a renamed handler, or code run as __main__ in a REPL or with python -c).",
            _jobs(sum(r.count for r in rows)),
            ", ".join(f"{r.name!r} in {r.queue!r} ({r.count})" for r in rows),
            _name_list(w.names),
        )


def _jobs(count: int) -> str:
    return f"{count} runnable job" + ("" if count == 1 else "s")


def _where(rows: Sequence[RunnableCount]) -> str:
    """``queue 'emails'`` or ``queues 'a' (2), 'b' (1)``."""
    if len(rows) == 1:
        return f"queue {rows[0].queue!r}"
    return "queues " + ", ".join(f"{r.queue!r} ({r.count})" for r in rows)


def _name_list(names: Collection[str]) -> str:
    """The sorted names, the first few of them: ``a, b, c … and 4 more``."""
    ordered = sorted(names)
    if not ordered:
        return "no jobs"
    shown = ", ".join(ordered[:_NAMES_SHOWN])
    if len(ordered) > _NAMES_SHOWN:
        shown += f" … and {len(ordered) - _NAMES_SHOWN} more"
    return shown


def _unhandled_hint(name: str, known: Collection[str]) -> str:
    """What to do about jobs named ``name`` that no worker runs."""
    module, _, qualname = name.partition(".")
    if module == "__main__" and qualname:
        twins = sorted(n for n in known if n.endswith("." + qualname))
        job = twins[0] if twins else "the job that should run them"
        return (
            "They were enqueued from code run as __main__ (python -c, a REPL, or a script "
            "under an older Dispatch); a script's jobs are now named after its module, as a "
            f"worker imports it. To run these, add aliases=[{name!r}] to {job}, or cancel "
            "them and enqueue again."
        )
    return (
        "They were enqueued under a name no worker imports: run a worker whose app imports "
        "the module that defines it, or, if the handler was renamed, keep the old name in "
        "aliases=[...]. `dispatch jobs counts` lists such jobs."
    )
