"""The signature scheme and the receivers' verify helper."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from dispatch_plugins.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    sign,
    verify_signature,
)

OLD = "old-secret-0123456789"
NEW = "new-secret-9876543210"
BODY = b'{"id":"evt_1","type":"dispatch.job.completed"}'
NOW = 1_750_000_000


def headers(signature: str, timestamp: int = NOW) -> dict[str, str]:
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature}


def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(OLD.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(secret=OLD, body=BODY, timestamp=NOW) == f"v1={expected}"


def test_a_signed_request_verifies() -> None:
    signature = sign(secret=OLD, body=BODY, timestamp=NOW)
    verify_signature(secret=OLD, body=BODY, headers=headers(signature), now=NOW + 10)


def test_header_names_are_case_insensitive() -> None:
    signature = sign(secret=OLD, body=BODY, timestamp=NOW)
    lowered = {k.lower(): v for k, v in headers(signature).items()}
    verify_signature(secret=OLD, body=BODY, headers=lowered, now=NOW)


@pytest.mark.parametrize(
    "body",
    [BODY + b" ", BODY.replace(b"completed", b"failed"), b""],
)
def test_a_tampered_body_is_a_mismatch(body: bytes) -> None:
    signature = sign(secret=OLD, body=BODY, timestamp=NOW)
    with pytest.raises(SignatureError, match="signature mismatch"):
        verify_signature(secret=OLD, body=body, headers=headers(signature), now=NOW)


def test_a_tampered_timestamp_is_a_mismatch() -> None:
    signature = sign(secret=OLD, body=BODY, timestamp=NOW)
    with pytest.raises(SignatureError, match="signature mismatch"):
        verify_signature(secret=OLD, body=BODY, headers=headers(signature, NOW + 1), now=NOW)


def test_the_wrong_secret_is_a_mismatch() -> None:
    signature = sign(secret=OLD, body=BODY, timestamp=NOW)
    with pytest.raises(SignatureError, match="signature mismatch"):
        verify_signature(secret=NEW, body=BODY, headers=headers(signature), now=NOW)


def test_stale_and_future_timestamps_are_refused() -> None:
    signature = sign(secret=OLD, body=BODY, timestamp=NOW)
    verify_signature(secret=OLD, body=BODY, headers=headers(signature), now=NOW + 300)
    with pytest.raises(SignatureError, match=r"stale timestamp: 301s old \(tolerance 300s\)"):
        verify_signature(secret=OLD, body=BODY, headers=headers(signature), now=NOW + 301)
    with pytest.raises(SignatureError, match="in the future"):
        verify_signature(secret=OLD, body=BODY, headers=headers(signature), now=NOW - 301)
    verify_signature(
        secret=OLD, body=BODY, headers=headers(signature), now=NOW + 3000, tolerance=3600
    )


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ({SIGNATURE_HEADER: "v1=00"}, f"missing {TIMESTAMP_HEADER} header"),
        ({TIMESTAMP_HEADER: str(NOW)}, f"missing {SIGNATURE_HEADER} header"),
        ({TIMESTAMP_HEADER: "soon", SIGNATURE_HEADER: "v1=00"}, "malformed"),
        ({TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: "v0=abc"}, "no v1= signature"),
    ],
)
def test_missing_and_malformed_headers_say_why(given: dict[str, str], reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        verify_signature(secret=OLD, body=BODY, headers=given, now=NOW)


def test_rotation_signs_with_every_secret_and_either_verifies() -> None:
    signature = sign(secret=[OLD, NEW], body=BODY, timestamp=NOW)
    parts = signature.split(" ")
    assert len(parts) == 2
    assert all(p.startswith("v1=") for p in parts)
    # a receiver still on the old secret, one already on the new, one accepting both
    verify_signature(secret=OLD, body=BODY, headers=headers(signature), now=NOW)
    verify_signature(secret=NEW, body=BODY, headers=headers(signature), now=NOW)
    verify_signature(secrets=[NEW, OLD], body=BODY, headers=headers(signature), now=NOW)
    # a receiver that accepts both, getting a request signed by the new secret only
    only_new = sign(secret=NEW, body=BODY, timestamp=NOW)
    verify_signature(secrets=[OLD, NEW], body=BODY, headers=headers(only_new), now=NOW)
    with pytest.raises(SignatureError, match="signature mismatch"):
        verify_signature(
            secret="third-secret-0123456789", body=BODY, headers=headers(signature), now=NOW
        )


def test_verify_needs_exactly_one_of_secret_and_secrets() -> None:
    signature = sign(secret=OLD, body=BODY, timestamp=NOW)
    with pytest.raises(ValueError, match="exactly one"):
        verify_signature(body=BODY, headers=headers(signature))
    with pytest.raises(ValueError, match="exactly one"):
        verify_signature(secret=OLD, secrets=[OLD], body=BODY, headers=headers(signature))


@pytest.mark.parametrize(
    "stamp",
    ["\u00b2\u00b3", "\u0661\u0662\u0663", "9" * 5000, "1e9", "-5", "", "\udcff"],
    ids=["superscripts", "arabic-indic", "5000-digits", "float", "negative", "empty", "surrogate"],
)
def test_a_hostile_timestamp_is_a_signature_error(stamp: str) -> None:
    """Whatever arrives in the timestamp header, the receiver gets a SignatureError, never a
    ValueError or UnicodeEncodeError it did not expect."""
    given = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: sign(secret=OLD, body=BODY, timestamp=NOW)}
    with pytest.raises(SignatureError):
        verify_signature(secret=OLD, body=BODY, headers=given, now=NOW)


@pytest.mark.parametrize("tolerance", [float("nan"), float("inf"), -1.0])
def test_a_tolerance_that_would_accept_any_age_is_refused(tolerance: float) -> None:
    signature = sign(secret=OLD, body=BODY, timestamp=NOW)
    with pytest.raises(ValueError, match="tolerance must be a finite number"):
        verify_signature(
            secret=OLD, body=BODY, headers=headers(signature), now=NOW + 10**9, tolerance=tolerance
        )
