"""A Dispatch application with cron entries and queue limits, for the cluster CLI tests.

The tests import it fresh for each test; CLI invocations made with ``--app
cliapp_cluster:engine`` then share its engine (and its in-memory store) within the test.
"""

from __future__ import annotations

from dispatch_core import Engine

engine = Engine("memory://", load_entrypoints=False)


@engine.job(name="cluster.report")
def report(day: str) -> str:
    return f"report for {day}"


@engine.cron("*/5 * * * *", name="cluster.tick")
def tick() -> None:
    pass


engine.schedule(
    "nightly",
    "0 3 * * 1-5",
    report,
    "monday",
    timezone="Europe/Paris",
    misfire="skip",
    misfire_grace=30,
)
engine.queue("emails", concurrency=5, rate=10, burst=20, per_tenant=True)
