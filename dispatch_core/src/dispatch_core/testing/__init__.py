"""Testing helpers: the store conformance suite and event capture.

``StoreConformance`` is the suite every store backend subclasses (it includes
``ClusterConformance``, the rules for workers, the leader, cron, queues and retention);
``WorkflowConformance`` checks the durable-workflow operations, and is subclassed on its own
for now, with the same ``store_factory``;
``capture_events`` records the lifecycle hooks an engine fires. ``Engine.drain`` runs queued
jobs to completion.
"""

from __future__ import annotations

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
