"""Checked by mypy (``make lint``), not run: the public API keeps payload types.

Each ``assert_type`` fails type-checking if the inferred type drifts.
"""

from __future__ import annotations

from typing import assert_type

import attrs

from dispatch_core import CronSpec, Engine, Job, JobContext, JobDefinition, QueueConfig

engine = Engine("memory://")


@attrs.frozen
class Welcome:
    user_id: int
    email: str


@engine.job
async def bare(msg: Welcome) -> None: ...


@engine.job(queue="emails")
async def with_ctx(ctx: JobContext, msg: Welcome) -> None: ...


@engine.job(name="tick")
async def tick() -> None: ...


@engine.job(name="ctx_only")
def ctx_only(ctx: JobContext) -> None: ...


@engine.job(name="numbers")
def numbers(values: list[int]) -> int:
    return sum(values)


@engine.cron("*/5 * * * *")
async def every_five(ctx: JobContext) -> None: ...


assert_type(every_five, JobDefinition[None])
assert_type(engine.schedule("weekly", "@weekly", bare, Welcome(1, "a@x")), CronSpec)
assert_type(engine.queue("emails", concurrency=5, rate=2.5), QueueConfig)
assert_type(bare, JobDefinition[Welcome])
assert_type(with_ctx, JobDefinition[Welcome])
assert_type(tick, JobDefinition[None])
assert_type(ctx_only, JobDefinition[None])
assert_type(numbers, JobDefinition[list[int]])


def produce() -> None:
    assert_type(with_ctx.enqueue(Welcome(1, "a@x"), delay=5), Job)
    assert_type(numbers.enqueue_many([[1, 2], [3]]), list[Job])
    tick.enqueue()
    with_ctx.enqueue("not a Welcome")  # type: ignore[arg-type]
