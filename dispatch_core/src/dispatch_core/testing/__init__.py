"""Testing helpers: the store conformance suite and event capture.

``StoreConformance`` is the suite every store backend subclasses (it includes
``ClusterConformance``, the rules for workers, the leader, cron, queues and retention);
``WorkflowConformance`` checks the durable-workflow operations, and is subclassed on its own
for now, with the same ``store_factory``;
``capture_events`` records the lifecycle hooks an engine fires. ``Engine.drain`` runs queued
jobs to completion.

The conformance suite is made of pytest classes, so this package needs pytest, which
dispatch-core does not depend on: install the ``testing`` extra
(``pip install 'dispatch-core[testing]'``, which adds pytest-asyncio for async tests too).
See docs/testing.md.
"""

from __future__ import annotations

try:
    import pytest  # noqa: F401  (the conformance modules below need it)
except ModuleNotFoundError as exc:
    if exc.name != "pytest":  # pytest is there but broken: show the real failure
        raise
    raise ModuleNotFoundError(
        "dispatch_core.testing needs pytest, which is not installed: "
        "pip install 'dispatch-core[testing]'",
        name="pytest",
    ) from exc

from dispatch_core.testing.conformance import StoreConformance, make_new_job
from dispatch_core.testing.conformance_cluster import ClusterConformance
from dispatch_core.testing.conformance_workflows import WorkflowConformance
from dispatch_core.testing.events import CapturedEvent, EventCapture, capture_events

__all__ = [
    "StoreConformance",
    "ClusterConformance",
    "WorkflowConformance",
    "make_new_job",
    "capture_events",
    "CapturedEvent",
    "EventCapture",
]
