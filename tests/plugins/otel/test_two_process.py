"""One trace across processes: an HTTP request in a producer process enqueues into SQLite,
a worker process runs the job; the consumer span joins the request's trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent


def run(role: str, url: str, spans: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(HERE / "_otel_procs.py"), role, url, str(spans)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(HERE)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def read_spans(path: Path) -> dict[str, dict[str, Any]]:
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    by_name = {s["name"]: s for s in spans}
    assert len(by_name) == len(spans), [s["name"] for s in spans]
    return by_name


@pytest.mark.slow
def test_the_worker_continues_the_request_trace(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    job_id = run("producer", url, tmp_path / "producer.jsonl")
    run("worker", url, tmp_path / "worker.jsonl")

    produced = read_spans(tmp_path / "producer.jsonl")
    assert set(produced) == {"GET /orders", "send shipping"}
    request, send = produced["GET /orders"], produced["send shipping"]
    assert request["kind"] == "SERVER"
    assert send["kind"] == "PRODUCER"
    assert send["parent_span_id"] == request["span_id"]
    assert send["attributes"]["messaging.message.id"] == job_id

    consumed = read_spans(tmp_path / "worker.jsonl")
    assert set(consumed) == {"process shipping", "pack parcel"}
    process, work = consumed["process shipping"], consumed["pack parcel"]
    assert process["kind"] == "CONSUMER"
    assert process["attributes"]["messaging.message.id"] == job_id
    # Same trace as the request, child of the producer span, and linked to it.
    assert process["trace_id"] == request["trace_id"]
    assert process["parent_span_id"] == send["span_id"]
    assert process["parent_remote"] is True
    assert process["links"] == [{"trace_id": send["trace_id"], "span_id": send["span_id"]}]
    assert work["trace_id"] == request["trace_id"]
    assert work["parent_span_id"] == process["span_id"]
