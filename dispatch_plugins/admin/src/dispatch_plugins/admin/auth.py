"""Bearer tokens: who may call the admin API, with which scopes, for which tenant.

A :class:`Token` has a name (shown in logs), a secret (sent as ``Authorization: Bearer
<secret>``, never logged), scopes and an optional tenant. A token bound to a tenant sees and
changes only that tenant's jobs, dead letters, runs and events; an unbound token is an
*operator* token: every tenant, plus the cluster routes (queues, workers, cron).

Which jobs a token with ``jobs:write`` may enqueue through the API: never an *internal* job
(the engine's or a plugin's own, such as ``webhooks.deliver``); for a tenant token, never an
*operator-only* job (flagged so, or the job of a cron entry); and, when the token has an
``enqueue`` allow-list, only the jobs whose names match one of its patterns.

Configuration is a JSON list, from ``DISPATCH_ADMIN_TOKENS`` or a file::

    [{"name": "ops", "token": "…at least 16 characters…", "scopes": ["admin"]},
     {"name": "acme-ro", "token": "…", "scopes": ["read"], "tenant": "acme"},
     {"name": "acme-mail", "token": "…", "scopes": ["jobs:write"], "tenant": "acme",
      "enqueue": ["emails.*"]}]

An operator token is one *without* a ``tenant`` key: ``"tenant": null`` is refused, so that a
tenant's name lost by a templating mistake never turns its token into an operator's. A tokens
file that its group or others may read or write is loaded with a warning saying what to
``chmod``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import logging
import os
import shlex
import stat
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

__all__ = [
    "Scope",
    "Token",
    "Authenticator",
    "load_tokens",
    "parse_tokens",
    "name_matches",
    "TOKENS_ENV",
    "MIN_SECRET_LENGTH",
]

log = logging.getLogger("dispatch_plugins.admin")

#: The environment variable :func:`load_tokens` reads when no file is given.
TOKENS_ENV = "DISPATCH_ADMIN_TOKENS"
#: Shorter secrets are refused when tokens are configured.
MIN_SECRET_LENGTH = 16


class Scope(enum.StrEnum):
    """What a token may do. ``read`` grants every ``*:read`` scope, ``admin`` everything."""

    JOBS_READ = "jobs:read"
    JOBS_WRITE = "jobs:write"
    DLQ_READ = "dlq:read"
    DLQ_WRITE = "dlq:write"
    WORKFLOWS_READ = "workflows:read"
    WORKFLOWS_WRITE = "workflows:write"
    EVENTS_WRITE = "events:write"
    QUEUES_READ = "queues:read"
    QUEUES_WRITE = "queues:write"
    WORKERS_READ = "workers:read"
    CRON_READ = "cron:read"
    CRON_WRITE = "cron:write"
    STATS_READ = "stats:read"
    READ = "read"
    ADMIN = "admin"


_KNOWN_SCOPES = frozenset(s.value for s in Scope)


def _check_scopes(_: object, __: attrs.Attribute[Any], scopes: frozenset[str]) -> None:
    unknown = sorted(s for s in scopes if s not in _KNOWN_SCOPES)
    if unknown:
        raise ValueError(
            f"unknown token scope(s) {', '.join(map(repr, unknown))}; known scopes: "
            + ", ".join(s.value for s in Scope)
        )


def _to_scopes(value: Iterable[str]) -> frozenset[str]:
    if isinstance(value, str):  # one scope given as a string, not a list of letters
        return frozenset({value})
    return frozenset(value)


def _check_name(_: object, __: attrs.Attribute[Any], name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a token's name must be a non-empty string")


def _check_secret(instance: Token, _: attrs.Attribute[Any], secret: str) -> None:
    # The message names the token, never its secret.
    if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"token {instance.name!r}: the secret must be at least {MIN_SECRET_LENGTH} "
            "characters long; make one with secrets.token_urlsafe()"
        )


#: Longest job-name pattern accepted in an allow-list (job names are at most 200 characters).
_MAX_PATTERN = 200


def _to_patterns(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):  # one pattern given as a string, not a list of letters
        return (value,)
    return tuple(value)


def _check_patterns(
    instance: Token, _: attrs.Attribute[Any], patterns: tuple[str, ...] | None
) -> None:
    for pattern in patterns or ():
        if (
            not isinstance(pattern, str)
            or not 1 <= len(pattern) <= _MAX_PATTERN
            or any(ord(c) < 32 or ord(c) == 127 for c in pattern)
        ):
            raise ValueError(
                f"token {instance.name!r}: enqueue: each pattern must be a job name of 1 to "
                f"{_MAX_PATTERN} characters without control characters, '*' matching any "
                f"run of characters; got {pattern!r}"
            )


def name_matches(patterns: Iterable[str], name: str) -> bool:
    """Whether job ``name`` matches one of ``patterns`` (exact names, or with ``*`` matching
    any run of characters: ``"emails.*"``, ``"*"``; nothing else is special)."""
    return any(_glob(p, name) for p in patterns)


def _glob(pattern: str, name: str) -> bool:
    # The greedy wildcard match: at most len(pattern) * len(name) steps whatever the input,
    # where a regular expression with several '*' could backtrack far longer on a bad name.
    p = n = 0
    star = -1  # the last '*' seen in the pattern...
    resume = 0  # ...and where in the name its run currently ends
    while n < len(name):
        if p < len(pattern) and pattern[p] != "*" and pattern[p] == name[n]:
            p += 1
            n += 1
        elif p < len(pattern) and pattern[p] == "*":
            star, resume = p, n
            p += 1
        elif star >= 0:
            resume += 1
            p, n = star + 1, resume
        else:
            return False
    return all(c == "*" for c in pattern[p:])


def _check_tenant(instance: Token, _: attrs.Attribute[Any], tenant: str | None) -> None:
    if tenant is not None and (not isinstance(tenant, str) or not tenant):
        raise ValueError(
            f"token {instance.name!r}: the tenant must be a non-empty string (or None for an "
            "operator token)"
        )


@attrs.frozen(kw_only=True)
class Token:
    """One configured API token.

    Attributes:
        name: Shown in logs and errors; never the secret.
        secret: What clients send as ``Authorization: Bearer <secret>``; at least 16
            characters; compared in constant time.
        scopes: What the token may do (see :class:`Scope`).
        tenant: The tenant the token is confined to; ``None`` makes it an operator token.
        enqueue: Job-name patterns the token may enqueue through ``POST /v1/jobs`` (exact
            names, or with ``*`` matching any run of characters: ``["emails.*"]``); ``None``
            (the default) for every job its kind may enqueue. The list only narrows: internal
            jobs stay refused to every token, operator-only ones to tenant tokens.

    Raises:
        ValueError: a scope is unknown, the secret is too short, the name is empty, or an
            ``enqueue`` pattern is not a string of 1 to 200 characters.
    """

    name: str = attrs.field(validator=_check_name)
    secret: str = attrs.field(repr=False, validator=_check_secret)
    scopes: frozenset[str] = attrs.field(converter=_to_scopes, validator=_check_scopes)
    tenant: str | None = attrs.field(default=None, validator=_check_tenant)
    enqueue: tuple[str, ...] | None = attrs.field(
        default=None, converter=_to_patterns, validator=_check_patterns
    )

    @property
    def operator(self) -> bool:
        """Whether the token is bound to no tenant (sees every tenant and the cluster)."""
        return self.tenant is None

    def allows(self, scope: Scope | str) -> bool:
        """Whether the token grants ``scope`` (directly, through ``read`` or ``admin``)."""
        if Scope.ADMIN in self.scopes or scope in self.scopes:
            return True
        return str(scope).endswith(":read") and Scope.READ in self.scopes

    def may_enqueue(self, name: str) -> bool:
        """Whether the token's ``enqueue`` allow-list lets it enqueue job ``name`` (always,
        without a list). Internal and operator-only jobs are checked by the route."""
        return self.enqueue is None or name_matches(self.enqueue, name)


class Authenticator:
    """Finds the token a request's ``Authorization`` header names, in constant time.

    Every configured token is compared, whatever matched first, and the comparison is of
    SHA-256 digests so that neither the position of a match nor the secrets' lengths show in
    the time taken.

    Raises:
        ValueError: two tokens share a secret (which one a request means would be ambiguous).
    """

    def __init__(self, tokens: Sequence[Token]) -> None:
        self.tokens = tuple(tokens)
        digests = [_digest(t.secret) for t in self.tokens]
        if len(set(digests)) != len(digests):
            raise ValueError("two admin tokens have the same secret; give each its own")
        self._entries = tuple(zip(digests, self.tokens, strict=True))

    def __bool__(self) -> bool:
        return bool(self.tokens)

    def authenticate(self, authorization: str | None) -> Token | None:
        """The token an ``Authorization: Bearer <secret>`` header value names, if any."""
        if not authorization:
            return None
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        candidate = _digest(credentials.strip())
        found: Token | None = None
        for digest, token in self._entries:
            # No early exit: the loop takes as long whichever token (or none) matches.
            if hmac.compare_digest(candidate, digest) and found is None:
                found = token
        return found


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def parse_tokens(data: str | bytes | Sequence[Mapping[str, Any]]) -> list[Token]:
    """Tokens from their JSON configuration (text, or the decoded list).

    Each item is ``{"name", "token", "scopes": [...], "tenant"?, "enqueue"?: [...]}``. An
    item without ``tenant`` is an operator token; ``"tenant": null`` is refused.

    Raises:
        ValueError: the JSON is malformed, an item lacks a field or has an unknown one, its
            ``tenant`` is ``null``, a scope or an ``enqueue`` pattern is invalid, or a secret is
            shorter than 16 characters. Messages name the token, never its secret.
    """
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise ValueError(f"admin tokens: not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, list):
        raise ValueError("admin tokens: expected a JSON list of token objects")
    tokens = []
    for i, item in enumerate(data):
        if not isinstance(item, Mapping):
            raise ValueError(f"admin tokens: item {i} is not an object")
        unknown = sorted(set(item) - {"name", "token", "scopes", "tenant", "enqueue"})
        if unknown:
            raise ValueError(f"admin tokens: item {i} has unknown field(s) {', '.join(unknown)}")
        missing = [k for k in ("name", "token", "scopes") if k not in item]
        if missing:
            raise ValueError(f"admin tokens: item {i} lacks {', '.join(missing)}")
        if "tenant" in item and item["tenant"] is None:
            # Most likely a template that lost the tenant's name: never an operator token.
            raise ValueError(
                f'admin tokens: item {i}{_named(item)}: "tenant": null is not allowed; for an '
                "operator token (every tenant, the cluster routes) leave the tenant key out, "
                "for a tenant token give the tenant's name"
            )
        scopes = item["scopes"]
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ValueError(f"admin tokens: item {i}: scopes must be a list of strings")
        enqueue = item.get("enqueue")
        if enqueue is not None and (
            not isinstance(enqueue, list) or not all(isinstance(p, str) for p in enqueue)
        ):
            raise ValueError(
                f"admin tokens: item {i}: enqueue must be a list of job-name patterns or null"
            )
        tokens.append(
            Token(
                name=item["name"],
                secret=item["token"],
                scopes=frozenset(scopes),
                tenant=item.get("tenant"),
                enqueue=enqueue,
            )
        )
    Authenticator(tokens)  # refuse shared secrets now, not at the first request
    return tokens


def _named(item: Mapping[str, Any]) -> str:
    """`` (token 'ops')`` when the item has a usable name, for error messages."""
    name = item.get("name")
    return f" (token {name!r})" if isinstance(name, str) and name.strip() else ""


def load_tokens(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> list[Token]:
    """Read the token configuration from a file, or else from ``DISPATCH_ADMIN_TOKENS``.

    A file whose mode lets its group or others read or write it is loaded, with a warning
    (logger ``dispatch_plugins.admin``) naming the file and the ``chmod`` to run.

    Args:
        path: A JSON file holding the list; when ``None`` the environment variable is read.
        environ: The environment to read (default ``os.environ``).

    Returns:
        The tokens; an empty list when neither a file nor the variable is given.

    Raises:
        ValueError: the configuration is invalid (see :func:`parse_tokens`).
        OSError: the file cannot be read.
    """
    if path is not None:
        with open(path, encoding="utf-8") as file:
            mode = os.fstat(file.fileno()).st_mode
            text = file.read()
        tokens = parse_tokens(text)
        # Only once it loads: a file that does not stops the server anyway.
        _warn_if_exposed(os.fspath(path), mode)
        return tokens
    text = (os.environ if environ is None else environ).get(TOKENS_ENV, "").strip()
    return parse_tokens(text) if text else []


#: Permission bits that expose a tokens file: read or write by its group or by others.
_EXPOSING = stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH


def _warn_if_exposed(path: str, mode: int) -> None:
    """Warn when the mode of the tokens file at ``path`` lets its group or others read it (and
    use its secrets) or write it (and add a token of their own)."""
    if os.name == "nt" or not stat.S_ISREG(mode) or not mode & _EXPOSING:
        return  # Windows has no such bits; a pipe or a device is not a file to chmod
    grants = []
    for whom, read, write in (
        ("its group", stat.S_IRGRP, stat.S_IWGRP),
        ("others", stat.S_IROTH, stat.S_IWOTH),
    ):
        rights = [right for right, bit in (("read", read), ("write", write)) if mode & bit]
        if rights:
            grants.append(f"{' and '.join(rights)} to {whom}")
    log.warning(
        "admin tokens file %s grants %s (mode %04o), but it holds the API's secrets: make "
        "it readable by its owner only (chmod 600 %s)",
        path,
        ", ".join(grants),
        stat.S_IMODE(mode),
        shlex.quote(path),
    )
