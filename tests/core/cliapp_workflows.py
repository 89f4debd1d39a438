"""A Dispatch application with a workflow, for the ``dispatch workflows`` CLI tests.

The tests import it fresh for each test; CLI invocations made with ``--app
cliapp_workflows:engine`` share its engine (and its memory store) within the test.
"""

from __future__ import annotations

from typing import Any

from dispatch_core import Engine, Workflow

engine = Engine("memory://", load_entrypoints=False)


def reserve(order_id: int) -> str:
    return f"res-{order_id}"


@engine.workflow(name="cliapp.order")
async def order(wf: Workflow, order_id: int) -> Any:
    reservation = await wf.step("reserve", reserve, order_id)
    paid = await wf.wait_for_event("paid")
    return {"reservation": reservation, "paid": paid}
