"""A Dispatch application for the CLI's subprocess (signal) tests.

Its store is ``$DISPATCH_URL`` (default ``memory://``). With ``CLIAPP_ENQUEUE=SECONDS`` set, it
enqueues one ``cliapp.slow`` job at import; the job touches ``$CLIAPP_MARKER`` when it starts,
then sleeps that many seconds.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from dispatch_core import Engine

engine = Engine(os.environ.get("DISPATCH_URL") or "memory://", load_entrypoints=True)


@engine.job(name="cliapp.slow")
async def slow(seconds: float) -> str:
    marker = os.environ.get("CLIAPP_MARKER")
    if marker:
        await asyncio.to_thread(Path(marker).write_text, "started")
    await asyncio.sleep(seconds)
    return "done"


if os.environ.get("CLIAPP_ENQUEUE"):
    slow.enqueue(float(os.environ["CLIAPP_ENQUEUE"]))
