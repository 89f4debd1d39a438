"""The verifying receiver of docs/webhooks.md works as printed."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatch_plugins.webhooks import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

ROOT = Path(__file__).resolve().parents[3]
SECRET = "docs-receiver-secret-0123"


def receiver_module(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    pytest.importorskip("starlette")
    page = (ROOT / "docs/webhooks.md").read_text()
    [code] = [
        block for block in re.findall(r"```python\n(.*?)```", page, re.S) if "Starlette(" in block
    ]
    monkeypatch.setenv("DISPATCH_WEBHOOK_SECRET", SECRET)
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/webhooks.md", "exec"), namespace)
    return namespace


async def test_the_documented_receiver_verifies_and_deduplicates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = receiver_module(monkeypatch)
    envelope = {"id": "evt_1", "type": "dispatch.job.dlq", "data": {"job_name": "x"}}
    body = json.dumps(envelope).encode()
    stamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        ID_HEADER: "evt_1",
        TIMESTAMP_HEADER: str(stamp),
        SIGNATURE_HEADER: sign(secret=SECRET, body=body, timestamp=stamp),
    }
    transport = httpx.ASGITransport(app=module["app"])
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        first = await client.post("/dispatch-hooks", content=body, headers=headers)
        again = await client.post("/dispatch-hooks", content=body, headers=headers)
        tampered = await client.post("/dispatch-hooks", content=body + b" ", headers=headers)
        stale_stamp = stamp - 3600
        stale_headers = {
            **headers,
            TIMESTAMP_HEADER: str(stale_stamp),
            SIGNATURE_HEADER: sign(secret=SECRET, body=body, timestamp=stale_stamp),
        }
        stale = await client.post("/dispatch-hooks", content=body, headers=stale_headers)
    assert (first.status_code, again.status_code) == (204, 204)
    assert module["seen_ids"] == {"evt_1"}
    assert tampered.status_code == 401
    assert "signature mismatch" in tampered.text
    assert stale.status_code == 401
    assert "stale timestamp" in stale.text
