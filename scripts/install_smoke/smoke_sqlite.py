"""dispatch-core + dispatch-sqlite: the embedded default, with the CLI."""

from __future__ import annotations

import asyncio
import importlib.metadata as md

import dispatch_core
import dispatch_plugins.sqlite
from dispatch_core import Engine

eps = {ep.name for ep in md.entry_points(group="dispatch_core.plugins")}
assert eps == {"sqlite"}, eps
engine = Engine()  # the embedded default: sqlite:///dispatch.db
assert engine.url == "sqlite:///dispatch.db", engine.url


@engine.job(name="smoke")
async def smoke(n: int) -> int:
    return n + 1


async def main() -> None:
    job = await smoke.aenqueue(41)
    await engine.drain()
    assert (await engine.aget_job(job.id)).result == 42
    await engine.aclose()


asyncio.run(main())
print("install check ok: dispatch-core + dispatch-sqlite", dispatch_core.__version__)
