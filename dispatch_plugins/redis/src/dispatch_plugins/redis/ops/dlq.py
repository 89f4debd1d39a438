"""The dead-letter queue: list_dlq, count_dlq, get_dlq, replay_dlq and purge_dlq. Each
operation names the scripts of ``lua/`` it runs."""

from __future__ import annotations

import re
from datetime import datetime

from dispatch_core.errors import DLQEntryNotFoundError, JobIdTakenError
from dispatch_core.models import DLQEntry, DLQFilter, Job
from dispatch_core.storekit import STORE_SECTIONS
from dispatch_plugins.redis import codec as c
from dispatch_plugins.redis.ops import common
from dispatch_plugins.redis.ops.common import Runner, page, previewed, walk

__all__ = [*STORE_SECTIONS["dlq"]]

#: A dead-letter entry id (a TypeID ``dlq_...``): the store mints them, so any other string
#: names no entry.
_DLQ_ID = re.compile(r"dlq_[0-7][0-9a-hjkmnp-tv-z]{25}")


def _dlq_filters(queue: str | None, tenant: str | None) -> list[str]:
    keys = []
    if queue is not None:
        keys.append(f"dlqs:q:{queue}")
    if tenant is not None:
        keys.append(f"dlqs:t:{tenant}")
    return keys


# -- lua/page.lua ----------------------------------------------------------------------------


async def list_dlq(s: Runner, filter: DLQFilter) -> list[DLQEntry]:
    """A page of dead-letter entries, walking the smallest index that matches."""
    keys = []
    if filter.queue is not None:
        keys.append(f"dlqs:q:{filter.queue}")
    if filter.tenant is not None:
        keys.append(f"dlqs:t:{filter.tenant}")
    if filter.name is not None:
        keys.append(f"dlqs:n:{filter.name}")
    exclude = []
    if filter.replayed is True:
        keys.append("dlqs:rp")
    elif filter.replayed is False:
        exclude.append("dlqs:rp")
    res = await page(
        s,
        base="dlqs",
        keys=keys,
        exclude=exclude,
        order=filter.order,
        after=filter.after,
        offset=filter.offset,
        limit=filter.limit,
        hash_prefix="dlq:",
        preview=filter.preview,
        bodies=("payload",),
    )
    return [previewed(flat, c.dlq_from) for flat in res]


# -- lua/cards.lua, lua/zcounts.lua, lua/walk.lua --------------------------------------------


async def count_dlq(
    s: Runner,
    *,
    queue: str | None = None,
    tenant: str | None = None,
    replayed: bool | None = None,
    before: datetime | None = None,
) -> int:
    """Index sizes, intersections as far as they cost at most :data:`~common.COUNT_BUDGET`,
    and walks in bounded steps past that (and for ``before`` with filters: the smaller of the
    window of ``dlqs:failed`` and the smallest filter index)."""
    filters = _dlq_filters(queue, tenant)
    if before is None:
        base = filters or ["dlqs"]
        if replayed is None:
            groups = [base]
        elif replayed:
            groups = [[*base, "dlqs:rp"]]
        else:
            groups = [base, [*base, "dlqs:rp"]]
        args: list[str] = [str(common.COUNT_BUDGET), str(len(groups))]
        for g in groups:
            args += (str(len(g)), *g)
        values = []
        for n, *keys in await s._call("cards", *args):
            if int(n) < 0:
                n = (await walk(s, keys[0], ins=keys[1:]))[0]
            values.append(int(n))
        return values[0] if len(values) == 1 else max(0, values[0] - values[1])
    cut = c.us(before)
    ins = [*filters, "dlqs:rp"] if replayed else filters
    outs = ["dlqs:rp"] if replayed is False else []
    if not ins and not outs:
        (n,) = await s._call("zcounts", "1", "dlqs:failed", "-inf", f"({cut}")
        return int(n)
    return await _dlq_walk(s, cut, ins, outs, purge=False)


async def _dlq_walk(
    s: Runner,
    cut: str,
    ins: list[str],
    outs: list[str],
    *,
    purge: bool,
    limit: int | None = None,
) -> int:
    """Count (or purge, at most ``limit``, oldest first) the entries that failed before
    ``cut``, in every ``ins`` index and in no ``outs`` one, walking the smaller of the
    window and the smallest ``ins`` index (``lua/zcounts.lua``, ``lua/walk.lua``,
    ``lua/delete_dlqs.lua``)."""
    args = ["dlqs:failed", "-inf", f"({cut}"]
    for k in ins:
        args += (k, "-inf", "+inf")
    window, *sizes = (int(n) for n in await s._call("zcounts", str(len(ins) + 1), *args))
    chunk = common.DELETE_CHUNK if purge else None
    if not sizes or min(sizes) >= window:
        n, _ = await walk(
            s, "dlqs:failed", hi=cut, ins=ins, outs=outs, purge=purge, limit=limit, chunk=chunk
        )
        return n
    i = sizes.index(min(sizes))
    driver, rest = ins[i], ins[:i] + ins[i + 1 :]
    if not purge or limit is None:
        n, _ = await walk(
            s,
            driver,
            ins=rest,
            outs=outs,
            score_key="dlqs:failed",
            below=cut,
            purge=purge,
            chunk=chunk,
        )
        return n
    # the oldest `limit` of them: found in steps, then deleted in steps
    oldest: list[tuple[int, str]] = []
    await walk(
        s,
        driver,
        ins=rest,
        outs=outs,
        score_key="dlqs:failed",
        below=cut,
        limit=limit,
        collect=oldest,
    )
    deleted = 0
    ids = [member for _, member in sorted(oldest)]
    for j in range(0, len(ids), common.DELETE_CHUNK):
        deleted += int(await s._call("delete_dlqs", cut, *ids[j : j + common.DELETE_CHUNK]))
    return deleted


# -- a plain read, lua/replay_dlq.lua --------------------------------------------------------


async def get_dlq(s: Runner, entry_id: str) -> DLQEntry:
    """The dead-letter entry ``entry_id`` (one ``HGETALL``), or
    :class:`DLQEntryNotFoundError`."""
    # entry ids are minted by this store: anything else is no entry, and never a key
    if not _DLQ_ID.fullmatch(entry_id):
        raise DLQEntryNotFoundError(entry_id)
    key = s._key("dlq", entry_id)
    flat = await s._cmd(lambda cl: cl.hgetall(key))
    if not flat or "job_id" not in flat:
        raise DLQEntryNotFoundError(entry_id)
    return c.dlq_from([x for kv in flat.items() for x in kv])


async def replay_dlq(s: Runner, entry_id: str, *, new_job_id: str, now: datetime) -> Job:
    """Enqueue the entry's job again as ``new_job_id`` and mark the entry replayed, in
    one script."""
    if not _DLQ_ID.fullmatch(entry_id):
        raise DLQEntryNotFoundError(entry_id)
    res = await s._call("replay_dlq", c.us(now), entry_id, new_job_id)
    status = int(res[0])
    if status == -2:
        raise DLQEntryNotFoundError(entry_id)
    if status == -1:
        raise JobIdTakenError(res[1])
    return c.job_from(res[1])


# -- lua/prune_dlq.lua; with filters, as count_dlq walks -------------------------------------


async def purge_dlq(
    s: Runner,
    *,
    before: datetime,
    queue: str | None = None,
    tenant: str | None = None,
    limit: int | None = None,
) -> int:
    """Delete in bounded steps of :data:`~common.DELETE_CHUNK` entries, oldest first. With
    filters, walking the smaller of the window and the smallest filter index (from which,
    with a ``limit``, the oldest matches are gathered first, then deleted)."""
    cut = c.us(before)
    filters = _dlq_filters(queue, tenant)
    if limit is not None and limit <= 0:
        return 0
    if not filters:
        total = 0
        while limit is None or total < limit:
            n = common.DELETE_CHUNK if limit is None else min(common.DELETE_CHUNK, limit - total)
            deleted, seen = await s._call("prune_dlq", cut, str(n))
            total += int(deleted)
            if int(seen) < n:
                break
        return total
    return await _dlq_walk(s, cut, filters, [], purge=True, limit=limit)
