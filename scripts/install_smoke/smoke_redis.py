"""dispatch-core + dispatch-redis: the Redis store from its wheel."""

from __future__ import annotations

import asyncio
import importlib.metadata as md
import os
import uuid

from dispatch_core import Engine

eps = {ep.name for ep in md.entry_points(group="dispatch_core.plugins")}
assert eps == {"redis"}, eps
url = os.environ.get("DISPATCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
prefix = f"wheelcheck{uuid.uuid4().hex[:8]}"
engine = Engine(f"{url}?prefix={prefix}")


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
        import redis

        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


asyncio.run(main())
print("install check ok: dispatch-core + dispatch-redis")
