"""Request signatures: how deliveries are signed and how receivers verify them.

The signature of a request is ``HMAC-SHA256(secret, f"{timestamp}.{body}")`` in hex, where
``timestamp`` is the ``Dispatch-Webhook-Timestamp`` header (Unix seconds) and ``body`` the
exact bytes of the request body. ``Dispatch-Webhook-Signature`` holds ``v1=<hex>``, or several
space-separated ``v1=`` values while a secret is being rotated.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Mapping, Sequence

from dispatch_plugins.webhooks.errors import SignatureError

__all__ = [
    "ID_HEADER",
    "TIMESTAMP_HEADER",
    "SIGNATURE_HEADER",
    "DEFAULT_TOLERANCE",
    "sign",
    "verify_signature",
]

ID_HEADER = "Dispatch-Webhook-Id"
TIMESTAMP_HEADER = "Dispatch-Webhook-Timestamp"
SIGNATURE_HEADER = "Dispatch-Webhook-Signature"
#: Seconds a timestamp may differ from the receiver's clock.
DEFAULT_TOLERANCE = 300
_SCHEME = "v1="


def _digest(secret: str, timestamp: str, body: bytes) -> str:
    message = timestamp.encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _as_list(secret: str | Sequence[str]) -> list[str]:
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets or not all(isinstance(s, str) and s for s in secrets):
        raise ValueError("give at least one non-empty secret")
    return secrets


def sign(*, secret: str | Sequence[str], body: bytes, timestamp: int) -> str:
    """The ``Dispatch-Webhook-Signature`` value for ``body`` sent at ``timestamp``.

    Args:
        secret: One secret, or several (one ``v1=`` signature each, space-separated).
        body: The exact request body.
        timestamp: Unix seconds, as sent in ``Dispatch-Webhook-Timestamp``.

    Returns:
        ``"v1=<hex>"``, or ``"v1=<hex> v1=<hex>"`` for two secrets.
    """
    stamp = str(int(timestamp))
    return " ".join(_SCHEME + _digest(s, stamp, body) for s in _as_list(secret))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, val in headers.items():
        if key.lower() == lowered:
            return val
    return None


#: Digits of a Unix time in seconds until the year 33658.
_MAX_STAMP_DIGITS = 12


def verify_signature(
    *,
    body: bytes,
    headers: Mapping[str, str],
    secret: str | None = None,
    secrets: Sequence[str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check that a webhook request was signed by Dispatch with one of your secrets.

    Pass the raw request body (before any JSON parsing) and its headers (any mapping; names
    are matched case-insensitively). The request is accepted when its timestamp is within
    ``tolerance`` seconds of ``now`` and one of its ``v1=`` signatures matches one of the
    secrets (several secrets: while you rotate). Comparisons are constant-time.

    Args:
        body: The exact request body bytes.
        headers: The request headers.
        secret: Your endpoint secret.
        secrets: Several accepted secrets, instead of ``secret``.
        tolerance: Seconds the timestamp may be off (default 300), against replays.
        now: The current Unix time (default ``time.time()``).

    Raises:
        SignatureError: why the request is not authentic (missing header, malformed or stale
            timestamp, no ``v1`` signature, mismatch).
        ValueError: neither or both of ``secret`` and ``secrets`` given, or a ``tolerance``
            that is negative or not finite.
    """
    if (secret is None) == (secrets is None):
        raise ValueError("give exactly one of secret= or secrets=")
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number of seconds >= 0, got {tolerance!r}")
    accepted = _as_list(secret if secret is not None else list(secrets or ()))
    stamp = _header(headers, TIMESTAMP_HEADER)
    if stamp is None:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} header")
    signature = _header(headers, SIGNATURE_HEADER)
    if signature is None:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    stamp = stamp.strip()
    # ASCII digits only, and no more than a Unix time has: str.isdigit() also accepts "²" and
    # other digits int() refuses, and a 5,000-digit stamp would make int() raise.
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= _MAX_STAMP_DIGITS):
        raise SignatureError(f"malformed {TIMESTAMP_HEADER} header: not Unix seconds")
    current = time.time() if now is None else now
    skew = current - int(stamp)
    if skew > tolerance:
        raise SignatureError(f"stale timestamp: {int(skew)}s old (tolerance {tolerance:g}s)")
    if -skew > tolerance:
        raise SignatureError(f"timestamp {int(-skew)}s in the future (tolerance {tolerance:g}s)")
    offered = [p[len(_SCHEME) :] for p in signature.split() if p.startswith(_SCHEME)]
    if not offered:
        raise SignatureError(f"no v1= signature in {SIGNATURE_HEADER} header")
    expected = [_digest(s, stamp, body) for s in accepted]
    matched = False
    for candidate in offered:
        for digest in expected:
            # Check every pair: the time taken does not depend on which one matches.
            matched |= hmac.compare_digest(candidate.encode("ascii", "replace"), digest.encode())
    if not matched:
        raise SignatureError("signature mismatch")
