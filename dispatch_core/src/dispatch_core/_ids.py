"""TypeID identifiers: a readable prefix plus a time-sortable UUIDv7 suffix."""

from __future__ import annotations

import secrets

from typeid import TypeID

__all__ = ["new_id", "new_token"]


def new_id(prefix: str) -> str:
    """Return a new TypeID string such as ``job_01h455vb4pex5vsknk084sn02q``."""
    return str(TypeID(prefix=prefix))


def new_token() -> str:
    """Return a fresh attempt token (fencing token) for a claimed job."""
    return secrets.token_hex(8)
