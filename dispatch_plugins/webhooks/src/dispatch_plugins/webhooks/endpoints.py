"""Endpoints: where events are delivered, and which ones."""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from dispatch_plugins.webhooks.catalog import EVENT_TYPES, matches, pattern_problem
from dispatch_plugins.webhooks.errors import RelayConfigError

__all__ = ["Endpoint", "MIN_SECRET_LENGTH", "check_unique_names", "endpoints_from_config"]

#: The shortest secret accepted, in characters.
MIN_SECRET_LENGTH = 16


def _secrets(value: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _events(value: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@attrs.frozen(kw_only=True)
class Endpoint:
    """A webhook receiver.

    Args:
        name: Unique among a relay's endpoints; delivery jobs carry it (never the secret).
        url: ``http://`` or ``https://`` URL events are POSTed to.
        secret: The signing secret (at least 16 characters), or several while rotating: each
            request then carries one ``v1=`` signature per secret.
        events: Event types or patterns (``"*"``, ``"dispatch.job.*"``,
            ``"dispatch.workflow.failed"``); default every event.
        tenant: ``None``: an operator endpoint, receiving the events of every tenant (and of
            untenanted work). A tenant name: only the events of that tenant's jobs and runs.
        allow_private: Allow the host to resolve to private, loopback or link-local
            addresses (an internal receiver). Off by default (SSRF protection).

    Raises:
        RelayConfigError: a field is invalid; the message names the endpoint and the field.
    """

    name: str
    url: str
    secret: tuple[str, ...] = attrs.field(converter=_secrets, repr=False)
    events: tuple[str, ...] = attrs.field(default=("*",), converter=_events)
    tenant: str | None = None
    allow_private: bool = False

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise RelayConfigError(f"endpoint {self.name!r}: name must be a non-empty string")
        self._check_url()
        if not self.secret:
            raise RelayConfigError(f"endpoint {self.name!r}: secret: give at least one secret")
        for secret in self.secret:
            if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
                raise RelayConfigError(
                    f"endpoint {self.name!r}: secret: each secret must be a string of at least "
                    f"{MIN_SECRET_LENGTH} characters"
                )
        if not self.events:
            raise RelayConfigError(f"endpoint {self.name!r}: events: give at least one pattern")
        for pattern in self.events:
            problem = pattern_problem(pattern)
            if problem is not None:
                raise RelayConfigError(
                    f"endpoint {self.name!r}: events: {problem}; known types: "
                    f"{', '.join(EVENT_TYPES)}"
                )
        if not isinstance(self.allow_private, bool):  # "false" from a file would be truthy
            raise RelayConfigError(
                f"endpoint {self.name!r}: allow_private must be true or false, got "
                f"{self.allow_private!r}"
            )
        if self.tenant is not None and (not isinstance(self.tenant, str) or not self.tenant):
            raise RelayConfigError(
                f"endpoint {self.name!r}: tenant must be a non-empty string or None"
            )

    def _check_url(self) -> None:
        if not isinstance(self.url, str):
            raise RelayConfigError(f"endpoint {self.name!r}: url must be a string")
        try:
            parts = urllib.parse.urlsplit(self.url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise RelayConfigError(f"endpoint {self.name!r}: url: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise RelayConfigError(
                f"endpoint {self.name!r}: url: scheme must be http or https, got "
                f"{parts.scheme or 'none'!r}"
            )
        if not parts.hostname:
            raise RelayConfigError(f"endpoint {self.name!r}: url: no host in {self.url!r}")

    @property
    def secrets(self) -> tuple[str, ...]:
        """The signing secrets (one, or several while rotating)."""
        return self.secret

    def wants(self, event_type: str, tenant: str | None) -> bool:
        """Whether this endpoint receives an event of ``event_type`` about ``tenant``."""
        if self.tenant is not None and tenant != self.tenant:
            return False
        return matches(self.events, event_type)


def check_unique_names(endpoints: Sequence[Endpoint]) -> None:
    """Raise :class:`RelayConfigError` when two endpoints share a name."""
    seen: set[str] = set()
    for endpoint in endpoints:
        if not isinstance(endpoint, Endpoint):
            raise RelayConfigError(f"expected Endpoint objects, got {endpoint!r}")
        if endpoint.name in seen:
            raise RelayConfigError(f"endpoint {endpoint.name!r}: name: duplicate endpoint name")
        seen.add(endpoint.name)


_FIELDS = {"name", "url", "secret", "secret_env", "events", "tenant", "allow_private"}


def _endpoint_from_dict(item: Any, index: int, environ: Mapping[str, str]) -> Endpoint:
    if not isinstance(item, dict):
        raise RelayConfigError(f"endpoints[{index}]: expected an object, got {item!r}")
    name = item.get("name", f"endpoints[{index}]")
    extra = sorted(set(item) - _FIELDS)
    if extra:
        raise RelayConfigError(f"endpoint {name!r}: unknown fields {extra}")
    fields = {k: v for k, v in item.items() if k != "secret_env"}
    if "secret_env" in item:
        if "secret" in item:
            raise RelayConfigError(f"endpoint {name!r}: give secret or secret_env, not both")
        var = item["secret_env"]
        if not isinstance(var, str) or var not in environ:
            raise RelayConfigError(
                f"endpoint {name!r}: secret_env: environment variable {var!r} is not set"
            )
        fields["secret"] = environ[var]
    for required in ("name", "url", "secret"):
        if required not in fields:
            raise RelayConfigError(f"endpoint {name!r}: {required}: missing")
    try:
        return Endpoint(**fields)
    except TypeError as exc:
        raise RelayConfigError(f"endpoint {name!r}: {exc}") from None


def endpoints_from_config(
    config: Any, *, environ: Mapping[str, str] | None = None
) -> list[Endpoint]:
    """Endpoints from a decoded JSON configuration: a list of endpoint objects, or an object
    whose ``"endpoints"`` holds that list. An endpoint object has the fields of
    :class:`Endpoint`; ``"secret_env": "VAR"`` reads the secret from an environment variable
    instead of an inline ``"secret"``."""
    env = os.environ if environ is None else environ
    items = config.get("endpoints") if isinstance(config, dict) else config
    if not isinstance(items, list):
        raise RelayConfigError("relay configuration: expected a list of endpoints")
    endpoints = [_endpoint_from_dict(item, i, env) for i, item in enumerate(items)]
    check_unique_names(endpoints)
    return endpoints


def read_config_file(path: str | Path) -> Any:
    """Decode a JSON configuration file; errors name the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise RelayConfigError(f"relay configuration {str(path)!r}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise RelayConfigError(f"relay configuration {str(path)!r}: invalid JSON: {exc}") from None
