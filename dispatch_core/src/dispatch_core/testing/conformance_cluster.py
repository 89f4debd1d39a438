"""The cluster half of the conformance suite: workers, the leader lease, rescue by dead worker,
cron entries, queue limits and retention.

:class:`ClusterConformance` is mixed into :class:`~dispatch_core.testing.StoreConformance`, so
a backend that subclasses the suite runs these tests too. They follow the same rules: plain
synchronous tests, one ``store_factory`` fixture, several instances from it standing for
several processes on one database. Times are passed explicitly (``now=``) so that the tests
never sleep, except the leader race, which runs on the real clock for two seconds.
"""

from __future__ import annotations

import pytest

from dispatch_core.testing._helpers import StoreFactory
from dispatch_core.testing.conformance_cron import CronConformance
from dispatch_core.testing.conformance_queues import QueueConformance
from dispatch_core.testing.conformance_retention import RetentionConformance
from dispatch_core.testing.conformance_workers import WorkerConformance

__all__ = ["ClusterConformance"]


# pytest collects inherited tests from the last base first: listed in reverse, the topics run
# in the order workers, cron, queues, retention.
class ClusterConformance(
    RetentionConformance, QueueConformance, CronConformance, WorkerConformance
):
    """The cluster rules of :class:`dispatch_core.store.Store`, as tests. Subclass (or
    subclass :class:`~dispatch_core.testing.StoreConformance`) and give ``store_factory``.

    The tests live in one module per topic: :mod:`.conformance_workers` (workers, the leader,
    rescue), :mod:`.conformance_cron`, :mod:`.conformance_queues` and
    :mod:`.conformance_retention`."""

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        raise NotImplementedError("a conformance subclass must define the store_factory fixture")
