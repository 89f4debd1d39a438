"""What several sections share: the runner the operations call, the bounds of every script
call, and the bounded listing and walk that jobs, dead letters and runs are read with.

Every script call does a bounded amount of work, so that it holds up other clients' commands
(a claim, a ``PING``) for about a millisecond at most; calls that have more to do go on from a
cursor in the next call. The bounds below were measured on the 2-core test machine
(docs/redis.md, Limits). The operations read them from this module when they run (as
``common.WALK_CHUNK``), so a test can make them tiny.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import attrs

import redis.asyncio as aredis
from dispatch_core.models import DLQEntry, Job, SortOrder
from dispatch_core.storekit import Truncated
from dispatch_core.workflows.models import WorkflowRun
from dispatch_plugins.redis import codec as c

__all__ = [
    "Runner",
    "COUNT_RUNNABLE_CHUNK",
    "COUNT_RUNNABLE_LIMIT",
    "WALK_CHUNK",
    "COUNT_BUDGET",
    "DELETE_CHUNK",
    "PAGE_EXAMINE",
    "PAGE_ITEMS",
    "PREVIEW_BUDGET",
    "BUCKET_STEPS",
    "QUEUE_CHUNK",
    "RESCUE_CHUNK",
    "page",
    "previewed",
    "walk",
]


class Runner(Protocol):
    """What the operations use of :class:`~dispatch_plugins.redis.store.RedisStore`."""

    async def _call(self, name: str, *args: Any) -> Any:
        """Run the script ``name`` (``lua/<name>.lua``) with ``args`` after the key prefix."""
        ...

    async def _cmd(self, fn: Callable[[aredis.Redis], Any]) -> Any:
        """Run one plain read command."""
        ...

    async def _scan(self, command: str, *key: str, count: int, **options: Any) -> list[Any]:
        """Every item a SCAN-family command returns, one bounded call at a time."""
        ...

    def _key(self, *parts: str) -> str:
        """The key of ``parts`` under the store's prefix."""
        ...


#: Entries one step of :meth:`RedisStore.count_runnable` looks at, at most (about a
#: millisecond of the server's time: other clients' commands wait no longer for it).
COUNT_RUNNABLE_CHUNK = 200
#: Entries :meth:`RedisStore.count_runnable` looks at in one queue (or one tenant's index), at
#: most: about half a second of the server's time.
COUNT_RUNNABLE_LIMIT = 100_000
#: Entries one step of a walk (a count or a throughput that cannot use an index directly, a
#: list of workers or cron entries, the silent-worker check) looks at, at most.
WALK_CHUNK = 250
#: Index entries a count may look up in one script (``ZINTERCARD`` looks at the smallest set's
#: entries once per other set); a count that would cost more walks in steps.
COUNT_BUDGET = 5_000
#: Rows one retention or purge step deletes (or looks at), at most.
DELETE_CHUNK = 100
#: Ids one listing step looks at, at most.
PAGE_EXAMINE = 500
#: Items one listing step returns, at most.
PAGE_ITEMS = 50
#: Bytes of long bodies one listing step with previews reads to cut them, at most (beyond the
#: item that crosses it): the server copies each long body once to take its first bytes.
PREVIEW_BUDGET = 4 * 1024 * 1024
#: Buckets one throughput step counts, at most.
BUCKET_STEPS = 100
#: Queues one ``list_queues`` step reads, at most.
QUEUE_CHUNK = 100
#: Running jobs one rescue step looks at, at most.
RESCUE_CHUNK = 100


# -- listings: lua/page.lua ------------------------------------------------------------------


async def page(
    s: Runner,
    *,
    base: str,
    keys: list[str],
    exclude: list[str],
    order: SortOrder,
    after: str | None,
    offset: int,
    limit: int,
    hash_prefix: str,
    preview: int | None = None,
    bodies: Sequence[str] = (),
) -> list[Any]:
    """A listing page in bounded steps: each looks at :data:`PAGE_EXAMINE` ids at most and
    returns :data:`PAGE_ITEMS` hashes at most; the next one goes on from its cursor.

    With ``preview``, the script leaves each of the ``bodies`` fields longer than that out
    of its hash (:func:`previewed` decodes what it sends instead), and a step stops
    early once it has read :data:`PREVIEW_BUDGET` bytes of them."""
    head = [base, str(len(keys)), *keys, str(len(exclude)), *exclude]
    head.append("1" if order is SortOrder.DESC else "0")
    out: list[Any] = []
    skipped = 0
    cursor = c.opt(after)
    while len(out) < limit:
        want = min(limit - len(out), PAGE_ITEMS)
        items, skips, cursor = await s._call(
            "page",
            *head,
            cursor,
            str(offset - skipped),
            str(want),
            hash_prefix,
            str(PAGE_EXAMINE),
            "" if preview is None else str(preview),
            str(PREVIEW_BUDGET),
            str(len(bodies)),
            *bodies,
        )
        out += items
        skipped += int(skips)
        if not cursor:
            break
    return out


_Listed = TypeVar("_Listed", Job, DLQEntry, WorkflowRun)


def previewed(flat: Sequence[Any], decode: Callable[[Sequence[Any]], _Listed]) -> _Listed:
    """Decode a hash of a listing with previews: a field ``~<name>`` valued
    ``<length>:<first bytes>`` stands for the body ``name`` the page script left out, and
    becomes a :class:`Truncated`."""
    names = flat[::2]
    if not any(name.startswith("~") for name in names):
        return decode(flat)
    plain: list[Any] = []
    cut: dict[str, Any] = {}
    for name, value in zip(names, flat[1::2], strict=True):
        if name.startswith("~"):
            size, _, head = value.partition(":")
            cut[name[1:]] = Truncated(preview=head, size=int(size))
            plain += (name[1:], "null")  # decodes to None; the Truncated takes its place
        else:
            plain += (name, value)
    return attrs.evolve(decode(plain), **cut)


# -- walks: lua/walk.lua (as "purge_walk" when it deletes) -----------------------------------


async def walk(
    s: Runner,
    driver: str,
    *,
    lo: str = "-inf",
    hi: str = "+inf",
    ins: Sequence[str] = (),
    outs: Sequence[str] = (),
    score_key: str = "",
    below: str = "",
    width: int | None = None,
    purge: bool = False,
    limit: int | None = None,
    chunk: int | None = None,
    collect: list[tuple[int, str]] | None = None,
) -> tuple[int, dict[int, int]]:
    """Walk the sorted set ``driver`` in score order (scores in ``[lo, hi)``), in steps of
    ``chunk`` (:data:`WALK_CHUNK`) entries, counting the members in every ``ins`` set, in
    no ``outs`` set and with a score below ``below`` in ``score_key``; by bucket of
    ``width`` too. With ``purge``, the matches (dead-letter entries) are deleted, at most
    ``limit``; with ``collect``, the ``limit`` matches of lowest score (in ``score_key``,
    else in ``driver``) are kept there, as (score, member). Returns the count and the
    counts by bucket."""
    total = 0
    slots: dict[int, int] = {}
    cursor = ""
    left = None if collect is not None else limit
    mode = "1" if purge else "0" if collect is None else "ids"
    while left is None or left > 0:
        cursor, n, flat = await s._call(
            "purge_walk" if purge else "walk",
            driver,
            cursor,
            str(chunk or WALK_CHUNK),
            lo,
            hi,
            str(len(ins)),
            *ins,
            str(len(outs)),
            *outs,
            score_key,
            below,
            "" if width is None else str(width),
            mode,
            "" if left is None else str(left),
        )
        total += int(n)
        if left is not None:
            left -= int(n)
        if collect is not None:
            found = [(int(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]
            collect[:] = heapq.nsmallest(limit or len(found), [*collect, *found])
        else:
            for i in range(0, len(flat), 2):
                slot = int(flat[i])
                slots[slot] = slots.get(slot, 0) + int(flat[i + 1])
        if not cursor:
            break
    return total, slots
