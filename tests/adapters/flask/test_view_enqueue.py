"""Enqueueing from views is sync and cheap: the pooled sync producer, no event loop per request."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask, request

from dispatch_core import JobState
from dispatch_flask import Dispatch

MakeApp = Callable[..., Flask]


@pytest.fixture
def loops_made(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every event loop created (asyncio.run and new_event_loop both go through here)."""
    made: list[object] = []
    original = asyncio.events.new_event_loop

    def counting() -> asyncio.AbstractEventLoop:
        loop = original()
        made.append(loop)
        return loop

    monkeypatch.setattr(asyncio.events, "new_event_loop", counting)
    monkeypatch.setattr(asyncio, "new_event_loop", counting)
    return made


def test_views_enqueue_without_an_event_loop_per_request(
    dispatch: Dispatch, make_app: MakeApp, sqlite_url: str, loops_made: list[object]
) -> None:
    @dispatch.job(name="v.record")
    def record(n: int) -> None: ...

    app = make_app(DISPATCH_URL=sqlite_url)

    @app.post("/record")
    def view() -> dict[str, Any]:
        return {"id": record.enqueue(request.get_json()["n"]).id}

    client = app.test_client()
    assert client.post("/record", json={"n": 0}).status_code == 200  # opens and migrates
    loops_before, threads_before = len(loops_made), threading.active_count()
    # The counter works: the one-time migration ran in a loop (and, when an installed plugin
    # implements lifecycle hooks, the engine's one background loop for them started).
    assert loops_before in (1, 2)

    # Requests from several threads at once, as a threaded WSGI server makes them.
    def post(n: int) -> str:
        body = app.test_client().post("/record", json={"n": n}).json
        assert body is not None
        return str(body["id"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(post, range(1, 201)))

    assert len(set(ids)) == 200
    assert len(loops_made) == loops_before  # no event loop was made for any request
    assert threading.active_count() == threads_before  # nor a thread left behind
    engine = dispatch.get_engine(app)
    assert all(engine.get_job(i).state is JobState.PENDING for i in ids[::20])
