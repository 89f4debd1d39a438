"""The Lua scripts: every write of the store is one of them, run atomically by the server.

Each script is one file of this package, ``<name>.lua``, read as a package resource; the store
runs it under that name (``RedisStore._call("claim", ...)`` runs ``claim.lua``). A script's
text is the shared helpers of ``_lib.lua`` (key names, index upkeep, the enqueue and
dead-letter helpers, the cursor walks) followed by its file, whose first comment lines say what
it does, what ``ARGV`` it takes and what it returns. ``ARGV[1]`` is always the key prefix; the
scripts declare no ``KEYS`` (they derive the job, run and index keys from ids), so the store
needs a standalone Redis server (or a primary with replicas), not Redis Cluster.

Conventions:

* Times are integer microseconds since the Unix epoch, passed and stored as decimal strings.
  Lua numbers are doubles, exact up to 2^53 (year 2255 in microseconds), but ``redis.call``
  formats a number argument with 14 significant digits, so a time is never handed to Redis as
  a number: ``f0`` formats one.
* An optional string argument is ``""`` for ``None`` and ``"=" .. value`` otherwise (so an
  empty tenant is told apart from no tenant).
* Scripts never raise for an expected refusal (Redis does not roll back a script that fails
  half-way): they check first, then write, and return a status the store turns into an
  exception. ``-1`` means "a job id is taken" (followed by the id), ``-2`` "not found".
* The reads (counts, walks, listings, retention) do a bounded amount of work per call: the
  store calls them again from the cursor they return, so other clients' commands run in
  between (see docs/redis.md, Limits).
"""

from __future__ import annotations

import hashlib
from importlib.resources import files

__all__ = ["PRELUDE", "SCRIPTS", "SHAS"]

_HERE = files(__name__)

#: The helpers every script starts with (``_lib.lua``).
PRELUDE: str = (_HERE / "_lib.lua").read_text(encoding="utf-8")

#: Scripts run under a second name: the walk that deletes is ``purge_walk``, so that the store
#: does not run it again after a dropped connection as it does the reads.
_ALIASES = {"purge_walk": "walk"}


def _load() -> dict[str, str]:
    bodies = {
        entry.name.removesuffix(".lua"): entry.read_text(encoding="utf-8")
        for entry in _HERE.iterdir()
        if entry.name.endswith(".lua") and not entry.name.startswith("_")
    }
    bodies.update({alias: bodies[name] for alias, name in _ALIASES.items()})
    return {name: PRELUDE + "\n" + body for name, body in sorted(bodies.items())}


#: Every script's full text, by name.
SCRIPTS: dict[str, str] = _load()
#: Every script's SHA-1, by name (what ``EVALSHA`` takes).
SHAS: dict[str, str] = {
    name: hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
    for name, text in SCRIPTS.items()
}
