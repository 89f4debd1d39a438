"""Deliveries to real receivers: signed, retried, timed out, redirected, refused (SSRF)."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dispatch_core import Engine, JobState
from dispatch_plugins.webhooks import (
    CATALOG_VERSION,
    DELIVER_JOB,
    USER_AGENT,
    Delivery,
    Endpoint,
    address_problem,
)

sys.path.insert(0, str(Path(__file__).parent))

from _relay_helpers import SECRET, Receiver, endpoint, fast_relay, settle

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def deliveries(engine: Engine) -> list[object]:
    return list(await engine.alist_jobs(name=DELIVER_JOB, order="asc"))


async def test_a_delivery_is_signed_and_verified_by_the_receiver(
    receiver: Receiver, make_engine: Callable[..., Engine]
) -> None:
    engine = make_engine(fast_relay([endpoint("ops", receiver, events=["dispatch.job.completed"])]))

    @engine.job(name="app.add")
    async def add(n: int) -> int:
        return n + 1

    job = await add.aenqueue(41)
    await settle(engine)

    [request] = receiver.requests
    assert request.verified == "ok"
    assert request.path == "/hooks"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("dispatch-webhooks/")
    assert request.headers["Host"] == f"127.0.0.1:{receiver.port}"
    envelope = request.json
    assert request.headers["Dispatch-Webhook-Id"] == envelope["id"]
    assert set(envelope) == {"id", "type", "created_at", "catalog_version", "tenant", "data"}
    assert envelope["type"] == "dispatch.job.completed"
    assert envelope["catalog_version"] == CATALOG_VERSION == "2025-01-01"
    assert RFC3339.fullmatch(envelope["created_at"])
    assert envelope["data"]["job_id"] == job.id
    [delivery] = await engine.alist_jobs(name=DELIVER_JOB)
    assert delivery.state is JobState.COMPLETED
    assert delivery.queue == "webhooks"
    assert delivery.result == {"endpoint": "ops", "status": 200}
    # the job carries the endpoint's name and the envelope, never the secret
    assert delivery.payload == {"endpoint": "ops", "event": envelope}
    assert SECRET not in repr(delivery.payload)


async def test_a_failing_receiver_is_retried_until_delivered(
    receiver_factory: Callable[..., Receiver], make_engine: Callable[..., Engine]
) -> None:
    flaky = receiver_factory("fail", fail_times=1)
    engine = make_engine(fast_relay([endpoint("flaky", flaky, events=["dispatch.job.enqueued"])]))

    @engine.job(name="app.noop")
    async def noop() -> None: ...

    await noop.aenqueue()
    await settle(engine)

    assert len(flaky.requests) == 2
    first, second = flaky.requests
    assert first.verified == second.verified == "ok"
    assert first.json["id"] == second.json["id"]  # the same event, for de-duplication
    [delivery] = await engine.alist_jobs(name=DELIVER_JOB)
    assert delivery.state is JobState.COMPLETED
    assert delivery.attempt == 2


async def test_a_hanging_receiver_times_out_and_is_dead_lettered(
    receiver_factory: Callable[..., Receiver], make_engine: Callable[..., Engine]
) -> None:
    stuck = receiver_factory("hang")
    relay = fast_relay(
        [endpoint("stuck", stuck, events=["dispatch.job.enqueued"])],
        timeout=0.3,
        max_retries=1,
    )
    engine = make_engine(relay)

    @engine.job(name="app.noop")
    async def noop() -> None: ...

    await noop.aenqueue()
    await settle(engine)

    assert len(stuck.requests) == 2  # the first attempt and one retry
    [delivery] = await engine.alist_jobs(name=DELIVER_JOB)
    assert delivery.state is JobState.FAILED
    assert delivery.attempt == 2
    [dead] = await engine.alist_dlq(name=DELIVER_JOB)
    assert "endpoint 'stuck': timed out" in dead.error
    assert "never be read" not in dead.error


async def test_a_redirect_is_refused_and_never_followed(
    receiver_factory: Callable[..., Receiver], make_engine: Callable[..., Engine]
) -> None:
    target = receiver_factory()
    redirector = receiver_factory("redirect", location=target.url)
    engine = make_engine(
        fast_relay([endpoint("moved", redirector, events=["dispatch.job.enqueued"])], max_retries=1)
    )

    @engine.job(name="app.noop")
    async def noop() -> None: ...

    await noop.aenqueue()
    await settle(engine)

    assert len(redirector.requests) == 2
    assert target.requests == []
    [dead] = await engine.alist_dlq(name=DELIVER_JOB)
    assert "endpoint 'moved': redirect refused (HTTP 302)" in dead.error


async def test_a_non_2xx_error_gives_the_status_never_the_body(
    receiver_factory: Callable[..., Receiver], make_engine: Callable[..., Engine]
) -> None:
    broken = receiver_factory("fail", fail_times=100)
    engine = make_engine(
        fast_relay([endpoint("broken", broken, events=["dispatch.job.enqueued"])], max_retries=0)
    )

    @engine.job(name="app.noop")
    async def noop() -> None: ...

    await noop.aenqueue()
    await settle(engine)

    [dead] = await engine.alist_dlq(name=DELIVER_JOB)
    assert "endpoint 'broken': HTTP 500" in dead.error
    assert "receiver body" not in dead.error
    [delivery] = await engine.alist_jobs(name=DELIVER_JOB)
    assert delivery.result is None


async def test_a_loopback_endpoint_is_refused_without_allow_private(
    receiver_factory: Callable[..., Receiver], make_engine: Callable[..., Engine]
) -> None:
    guarded = receiver_factory()
    internal = receiver_factory()
    engine = make_engine(
        fast_relay(
            [
                endpoint("guarded", guarded, allow_private=False, events=["dispatch.job.enqueued"]),
                endpoint(
                    "internal", internal, allow_private=True, events=["dispatch.job.enqueued"]
                ),
            ],
            max_retries=5,
        )
    )

    @engine.job(name="app.noop")
    async def noop() -> None: ...

    await noop.aenqueue()
    await settle(engine)

    assert guarded.requests == []  # never connected to
    assert [r.verified for r in internal.requests] == ["ok"]
    [dead] = await engine.alist_dlq(name=DELIVER_JOB)
    assert dead.payload["endpoint"] == "guarded"
    assert "refused to connect to 127.0.0.1: 127.0.0.1 is loopback" in dead.error
    refused = [j for j in await engine.alist_jobs(name=DELIVER_JOB) if j.state is JobState.FAILED]
    assert [j.attempt for j in refused] == [1]  # failed for good: no retry of a refusal


async def test_every_resolved_address_is_checked_and_the_checked_one_is_used(
    receiver: Receiver, make_engine: Callable[..., Engine]
) -> None:
    answers = {
        "hooks.example.test": ["127.0.0.1"],
        "mixed.example.test": ["93.184.216.34", "10.0.0.7"],
    }

    async def resolver(host: str, port: int) -> list[str]:
        return answers[host]

    engine = make_engine(
        fast_relay(
            [
                Endpoint(
                    name="pinned",
                    url=f"http://hooks.example.test:{receiver.port}/hooks",
                    secret=SECRET,
                    allow_private=True,
                    events=["dispatch.job.enqueued"],
                ),
                Endpoint(
                    name="mixed",
                    url="https://mixed.example.test/hooks",
                    secret=SECRET,
                    events=["dispatch.job.enqueued"],
                ),
            ],
            resolver=resolver,
        )
    )

    @engine.job(name="app.noop")
    async def noop() -> None: ...

    await noop.aenqueue()
    await settle(engine)

    # the request went to the resolved address, naming the endpoint's host
    [request] = receiver.requests
    assert request.headers["Host"] == f"hooks.example.test:{receiver.port}"
    assert request.verified == "ok"
    # one private address among public ones is enough to refuse
    [dead] = await engine.alist_dlq(name=DELIVER_JOB)
    assert "refused to connect to mixed.example.test: 10.0.0.7 is private" in dead.error


async def test_an_endpoint_unknown_to_the_worker_fails_the_attempt(
    receiver: Receiver, make_engine: Callable[..., Engine]
) -> None:
    engine = make_engine(fast_relay([endpoint("ops", receiver, events=["dispatch.cron.fired"])]))
    envelope = {"id": "evt_x", "type": "dispatch.job.enqueued", "data": {}}
    await engine.aenqueue(DELIVER_JOB, Delivery(endpoint="gone", event=envelope), max_retries=1)
    await settle(engine)

    [job] = await engine.alist_jobs(name=DELIVER_JOB)
    assert job.state is JobState.FAILED
    assert job.attempt == 2  # retried: another worker may know the endpoint
    assert job.last_error is not None
    assert "endpoint 'gone' is not configured in this worker's relay" in job.last_error
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not globally routable"),
        ("fd00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("2002:a00:1::", "private"),  # 6to4 around 10.0.0.1
    ],
)
def test_refused_addresses(address: str, problem: str) -> None:
    reason = address_problem(address)
    assert reason is not None
    assert problem in reason


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_problem(address) is None


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for hooks.example.test (made with the openssl command)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=hooks.example.test",
            "-addext", "subjectAltName=DNS:hooks.example.test",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_is_pinned_to_the_checked_address_with_sni_and_certificate_checks(
    certificate: tuple[Path, Path],
    receiver_factory: Callable[..., Receiver],
    make_engine: Callable[..., Engine],
) -> None:
    cert, key = certificate
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    secure = receiver_factory(tls=server_tls)

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]  # both names point at the receiver

    def https(name: str, host: str) -> Endpoint:
        return Endpoint(
            name=name,
            url=f"https://{host}:{secure.port}/hooks",
            secret=SECRET,
            allow_private=True,
            events=["dispatch.job.enqueued"],
        )

    engine = make_engine(
        fast_relay(
            [https("right", "hooks.example.test"), https("wrong", "other.example.test")],
            resolver=resolver,
            ssl_context=ssl.create_default_context(cafile=str(cert)),
            max_retries=0,
        )
    )

    @engine.job(name="app.noop")
    async def noop() -> None: ...

    await noop.aenqueue()
    await settle(engine)

    # the connection went to the address, the TLS handshake named the host
    [request] = secure.requests
    assert request.headers["Host"] == f"hooks.example.test:{secure.port}"
    assert request.verified == "ok"
    assert sorted(n or "" for n in secure.sni) == ["hooks.example.test", "other.example.test"]
    # the certificate is checked against the endpoint's host, not the address
    [dead] = await engine.alist_dlq(name=DELIVER_JOB)
    assert dead.payload["endpoint"] == "wrong"
    assert "CERTIFICATE_VERIFY_FAILED" in dead.error
