"""TypeID identifiers: a readable prefix plus a time-sortable UUIDv7 suffix."""

from __future__ import annotations

import itertools
import secrets

from typeid import TypeID

__all__ = ["new_id", "new_token"]


def new_id(prefix: str) -> str:
    """Return a new TypeID string such as ``job_01h455vb4pex5vsknk084sn02q``."""
    return str(TypeID(prefix=prefix))


# A random per-process prefix and a counter: unique, and far cheaper than os.urandom per claim.
_TOKEN_PREFIX = secrets.token_hex(6)
_token_counter = itertools.count(1)


def new_token() -> str:
    """Return a fresh attempt token (fencing token) for a claimed job, unique in this process
    and, through its random prefix, across processes."""
    return f"{_TOKEN_PREFIX}{next(_token_counter):x}"
