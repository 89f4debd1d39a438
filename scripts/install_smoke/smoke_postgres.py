"""dispatch-core + dispatch-postgres: what production users install."""

from __future__ import annotations

import asyncio
import importlib.metadata as md
import os
import uuid

import psycopg

import dispatch_plugins.postgres
from dispatch_core import Engine

eps = {ep.name for ep in md.entry_points(group="dispatch_core.plugins")}
assert eps == {"postgres"}, eps
assert psycopg.pq.__impl__ in ("binary", "c"), psycopg.pq.__impl__
dsn = os.environ.get("DISPATCH_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
schema = f"wheelcheck_{uuid.uuid4().hex[:8]}"
engine = Engine(f"{dsn}?schema={schema}")


@engine.job(name="smoke")
async def smoke(n: int) -> int:
    return n + 1


async def main() -> None:
    try:
        job = await smoke.aenqueue(41)
        await engine.drain()
        assert (await engine.aget_job(job.id)).result == 42
    finally:
        await engine.aclose()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


asyncio.run(main())
print("install check ok: dispatch-core + dispatch-postgres")
