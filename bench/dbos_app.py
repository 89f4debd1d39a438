"""The DBOS Transact side of the workflow benchmark: the same 10-step workflow of no-op steps.

Imported only by the DBOS child process (``python -m bench.workflows dbos ...``): DBOS keeps a
process-wide singleton and registry, so it never runs inside the benchmark process.
"""

from __future__ import annotations

from dbos import DBOS

__all__ = ["STEPS", "ten_steps", "expected_output"]

#: Steps per workflow run (the same constant as ``bench.workflows.STEPS``).
STEPS = 10


@DBOS.step()
async def noop_step(i: int) -> int:
    return i


@DBOS.workflow()
async def ten_steps(n: int) -> int:
    total = 0
    for i in range(STEPS):
        total += await noop_step(i)
    return n + total


def expected_output(n: int) -> int:
    """What run ``n`` returns: its input plus the sum of its steps' results."""
    return n + sum(range(STEPS))
