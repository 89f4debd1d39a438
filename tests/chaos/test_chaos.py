"""The chaos suite: several worker processes drain thousands of jobs while workers (the
leader among them) are ``kill -9``-ed and the store's server is crashed and restarted
(PostgreSQL with an immediate stop, Redis with ``kill -9``); then no job is lost, none
is completed twice, every extra execution is explained, cron fired each tick at most once,
and a killed worker's jobs run again within seconds.

``make chaos`` runs it alone; the seed is ``DISPATCH_TEST_CHAOS_SEED`` (``DISPATCH_CHAOS_SEED``
through make). Each run's figures appear in the "chaos" section of the terminal summary and in
``summary.txt`` next to the workers' logs in the test's ``tmp_path``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ._harness import ChaosCluster, ChaosRedis, within
from ._scenario import DEADLINE, Run, run

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


async def test_chaos_on_sqlite(
    tmp_path: Path, seed: int, here: Path, report_summary: Callable[[str], None]
) -> None:
    spec = Run(
        store="sqlite",
        url=f"sqlite:///{tmp_path}/jobs.db",
        ledger=f"sqlite:///{tmp_path}/ledger.db",
        seed=seed,
        app_dir=here,
        tmp=tmp_path,
    )
    findings, text = await within(run(spec), DEADLINE + 120, f"chaos on {spec.store}")
    report_summary(text)
    assert findings.problems == [], text


async def test_chaos_on_postgres(
    tmp_path: Path,
    seed: int,
    here: Path,
    cluster: ChaosCluster,
    report_summary: Callable[[str], None],
) -> None:
    spec = Run(
        store="postgresql",
        # Small pools: four workers, their replacements and the ledger share one server.
        url=f"{cluster.dsn}?schema=dispatch&pool_timeout=5&max_size=5",
        ledger=cluster.dsn,
        seed=seed,
        app_dir=here,
        tmp=tmp_path,
        server=cluster,
    )
    findings, text = await within(run(spec), DEADLINE + 120, f"chaos on {spec.store}")
    report_summary(text)
    assert findings.problems == [], text


async def test_chaos_on_redis(
    tmp_path: Path,
    seed: int,
    here: Path,
    redis_server: ChaosRedis,
    report_summary: Callable[[str], None],
) -> None:
    # The server keeps every acknowledged write (appendfsync always): the verdict allows no
    # lost claim, and a re-run for a lost outcome only if it was in flight at the crash.
    spec = Run(
        store="redis",
        url=f"{redis_server.url}?prefix=chaos&socket_timeout=5",
        # The ledger must outlive the crashes: SQLite, beside the server's files.
        ledger=f"sqlite:///{tmp_path}/ledger.db",
        seed=seed,
        app_dir=here,
        tmp=tmp_path,
        server=redis_server,
    )
    findings, text = await within(run(spec), DEADLINE + 120, f"chaos on {spec.store}")
    report_summary(text)
    assert findings.problems == [], text
