"""Fixtures for the relay tests: receivers stopped at the end of each test, and memory
engines with a relay, closed at the end."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatch_core import Engine
from dispatch_plugins.webhooks import Relay

sys.path.insert(0, str(Path(__file__).parent))

from _relay_helpers import Receiver


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    """Start receivers; all are stopped when the test ends."""
    started: list[Receiver] = []

    def start(mode: str = "ok", **kwargs: Any) -> Receiver:
        receiver = Receiver(mode, **kwargs)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.close()


@pytest.fixture
def receiver(receiver_factory: Callable[..., Receiver]) -> Receiver:
    """One verifying receiver."""
    return receiver_factory()


@pytest.fixture
async def make_engine() -> AsyncIterator[Callable[..., Engine]]:
    """Build memory engines with the given relay (entry points off); closed at the end."""
    engines: list[Engine] = []

    def build(relay: Relay | None = None, **kwargs: Any) -> Engine:
        options: dict[str, Any] = {"load_entrypoints": False, **kwargs}
        engine = Engine("memory://", plugins=[relay] if relay else [], **options)
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        await engine.aclose()
        engine.close()
