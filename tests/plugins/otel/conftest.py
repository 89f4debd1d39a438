"""Fixtures for the dispatch-otel tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _otel_helpers import Telemetry, make_telemetry


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """A fresh SDK and OTel object, shut down after the test."""
    tel = make_telemetry()
    try:
        yield tel
    finally:
        tel.tracer_provider.shutdown()
        tel.meter_provider.shutdown()
