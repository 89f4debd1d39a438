"""The workflow half of the conformance suite: runs, their history, events and driver jobs.

:class:`WorkflowConformance` checks the "durable workflows" section of
:class:`~dispatch_core.store.Store` (``create_run`` ... ``take_event``). It follows the rules of
the rest of the suite: plain synchronous tests, one ``store_factory`` fixture, several instances
from it standing for several processes on one database, and explicit ``now=`` values so that
nothing sleeps.
"""

from __future__ import annotations

import pytest

from dispatch_core.testing._helpers import StoreFactory
from dispatch_core.testing.conformance_events import EventConformance
from dispatch_core.testing.conformance_runs import RunConformance

__all__ = ["WorkflowConformance"]


# pytest collects inherited tests from the last base first: listed in reverse, runs come first.
class WorkflowConformance(EventConformance, RunConformance):
    """The workflow rules of :class:`dispatch_core.store.Store`, as tests. Subclass and give
    ``store_factory`` (the same fixture as :class:`~dispatch_core.testing.StoreConformance`).

    The tests live in :mod:`.conformance_runs` (runs, history, ``update_run``) and
    :mod:`.conformance_events` (``send_event``, ``take_event``)."""

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        raise NotImplementedError("a conformance subclass must define the store_factory fixture")
