"""The ``DISPATCH_*`` keys of ``app.config``: their defaults, and reading them with checks.

Every key is optional; :func:`set_defaults` fills the missing ones (``app.config.setdefault``)
so ``app.config`` shows what is in force. :func:`read_config` turns the keys into a
:class:`DispatchConfig` and refuses a bad value with an error naming the key.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, MutableMapping
from typing import Any

import attrs

from dispatch_core import ConfigurationError, QueueConfig

__all__ = ["DEFAULTS", "DispatchConfig", "WorkerSettings", "read_config", "set_defaults"]

PREFIX = "DISPATCH_"

#: Every key the extension reads, with its default.
DEFAULTS: Mapping[str, Any] = {
    # The store; None means the engine's default: $DISPATCH_URL, else sqlite:///dispatch.db.
    "DISPATCH_URL": None,
    "DISPATCH_AUTO_MIGRATE": True,
    # Cluster-wide queue limits: {"emails": {"concurrency": 4, "rate": 2.0}}.
    "DISPATCH_QUEUES": {},
    # What `flask dispatch worker` and Dispatch.worker() use (the Worker arguments).
    "DISPATCH_WORKER_QUEUES": None,
    "DISPATCH_WORKER_CONCURRENCY": 10,
    "DISPATCH_WORKER_LEASE_SECONDS": 15.0,
    "DISPATCH_WORKER_GRACE_PERIOD": 30.0,
    "DISPATCH_WORKER_POLL_INTERVAL": 1.0,
    "DISPATCH_WORKER_PREFETCH": 0,
    "DISPATCH_WORKER_HEARTBEAT_INTERVAL": None,
    "DISPATCH_WORKER_TIMEOUT": None,
    "DISPATCH_WORKER_LEAD": True,
}

_QUEUE_LIMIT_KEYS = ("concurrency", "rate", "burst", "per_tenant")


@attrs.frozen(kw_only=True)
class WorkerSettings:
    """How workers of the app run: the :class:`~dispatch_core.Worker` arguments from config.

    Attributes:
        queues: Queues to take jobs from (``None``: every queue).
        concurrency: Jobs run at once.
        lease_seconds: How long a claim holds a job without a heartbeat.
        grace_period: Seconds running jobs get to finish at shutdown.
        poll_interval: Longest idle wait between polls of the store.
        prefetch: Jobs claimed ahead of free slots.
        heartbeat_interval: Seconds between heartbeats (``None``: the worker's default).
        worker_timeout: Seconds without a heartbeat before the leader declares a worker dead
            (``None``: the worker's default).
        lead: Take part in the leader election.
    """

    queues: tuple[str, ...] | None = None
    concurrency: int = 10
    lease_seconds: float = 15.0
    grace_period: float = 30.0
    poll_interval: float = 1.0
    prefetch: int = 0
    heartbeat_interval: float | None = None
    worker_timeout: float | None = None
    lead: bool = True

    def worker_kwargs(self) -> dict[str, Any]:
        """The settings as keyword arguments of :class:`~dispatch_core.Worker`."""
        kwargs = attrs.asdict(self)
        kwargs["queues"] = list(self.queues) if self.queues else None
        return kwargs


@attrs.frozen(kw_only=True)
class DispatchConfig:
    """The extension's configuration for one app, read from its ``DISPATCH_*`` keys.

    Attributes:
        url: The store URL (``None``: ``$DISPATCH_URL``, else ``sqlite:///dispatch.db``).
        auto_migrate: Migrate the store's schema when the engine first opens it.
        queues: Queue limits declared for the whole cluster.
        worker: How workers of the app run.
    """

    url: str | None = None
    auto_migrate: bool = True
    queues: tuple[QueueConfig, ...] = ()
    worker: WorkerSettings = WorkerSettings()


def set_defaults(config: MutableMapping[str, Any]) -> None:
    """Fill the missing ``DISPATCH_*`` keys of ``config`` with their defaults."""
    for key, default in DEFAULTS.items():
        # A fresh dict per app, so one app's edits never reach another's.
        config.setdefault(key, dict(default) if isinstance(default, dict) else default)


def read_config(config: Mapping[str, Any]) -> DispatchConfig:
    """Read and check the ``DISPATCH_*`` keys of ``config`` (missing keys take defaults).

    Raises:
        ConfigurationError: a key is unknown or holds a bad value; the message names the key
            (``app.config['DISPATCH_WORKER_CONCURRENCY'] must be ...``).
    """
    _refuse_unknown_keys(config)
    r = _Reader(config)
    return DispatchConfig(
        url=r.url("DISPATCH_URL"),
        auto_migrate=r.boolean("DISPATCH_AUTO_MIGRATE"),
        queues=r.queue_limits("DISPATCH_QUEUES"),
        worker=WorkerSettings(
            queues=r.queue_names("DISPATCH_WORKER_QUEUES"),
            concurrency=r.integer("DISPATCH_WORKER_CONCURRENCY", minimum=1),
            lease_seconds=r.seconds("DISPATCH_WORKER_LEASE_SECONDS", positive=True),
            grace_period=r.seconds("DISPATCH_WORKER_GRACE_PERIOD", positive=False),
            poll_interval=r.seconds("DISPATCH_WORKER_POLL_INTERVAL", positive=True),
            prefetch=r.integer("DISPATCH_WORKER_PREFETCH", minimum=0),
            heartbeat_interval=r.optional_seconds("DISPATCH_WORKER_HEARTBEAT_INTERVAL"),
            worker_timeout=r.optional_seconds("DISPATCH_WORKER_TIMEOUT"),
            lead=r.boolean("DISPATCH_WORKER_LEAD"),
        ),
    )


def _refuse_unknown_keys(config: Mapping[str, Any]) -> None:
    # A misspelt key would otherwise be ignored in silence, leaving the default in force.
    for key in config:
        if isinstance(key, str) and key.startswith(PREFIX) and key not in DEFAULTS:
            # Compared without the shared prefix, which would make every key look close.
            suffixes = {k.removeprefix(PREFIX): k for k in DEFAULTS}
            close = difflib.get_close_matches(key.removeprefix(PREFIX), suffixes, n=1, cutoff=0.8)
            hint = (
                f"; did you mean {suffixes[close[0]]}?"
                if close
                else f"; known keys: {', '.join(DEFAULTS)}"
            )
            raise ConfigurationError(f"app.config[{key!r}] is not a Dispatch setting{hint}")


class _Reader:
    """Reads one key at a time, turning a bad value into an error that names the key."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def get(self, key: str) -> Any:
        return self.config.get(key, DEFAULTS[key])

    @staticmethod
    def fail(key: str, expected: str, value: Any) -> ConfigurationError:
        return ConfigurationError(f"app.config[{key!r}] must be {expected}, got {value!r}")

    def url(self, key: str) -> str | None:
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "a store URL such as 'sqlite:///jobs.db' or None", value)
        return value.strip()

    def boolean(self, key: str) -> bool:
        value = self.get(key)
        if not isinstance(value, bool):
            raise self.fail(key, "True or False", value)
        return value

    def integer(self, key: str, *, minimum: int) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(key, f"an integer >= {minimum}", value)
        return value

    def seconds(self, key: str, *, positive: bool) -> float:
        value = self.get(key)
        ok = (
            not isinstance(value, bool)
            and isinstance(value, int | float)
            and math.isfinite(value)
            and (value > 0 if positive else value >= 0)
        )
        if not ok:
            bound = "> 0" if positive else ">= 0"
            raise self.fail(key, f"a number of seconds {bound}", value)
        return float(value)

    def optional_seconds(self, key: str) -> float | None:
        return None if self.get(key) is None else self.seconds(key, positive=True)

    def queue_names(self, key: str) -> tuple[str, ...] | None:
        value = self.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, list | tuple) or not all(isinstance(q, str) for q in value):
            raise self.fail(key, "a list of queue names, a comma-separated string or None", value)
        names = tuple(q.strip() for q in value if q.strip())
        return names or None

    def queue_limits(self, key: str) -> tuple[QueueConfig, ...]:
        value = self.get(key)
        if not isinstance(value, Mapping):
            raise self.fail(key, "a dict of queue name to limits", value)
        configs = []
        for name, limits in value.items():
            where = f"app.config[{key!r}][{name!r}]"
            if not isinstance(name, str) or not name:
                raise ConfigurationError(f"app.config[{key!r}] has a bad queue name {name!r}")
            if not isinstance(limits, Mapping):
                raise ConfigurationError(
                    f"{where} must be a dict of limits ({', '.join(_QUEUE_LIMIT_KEYS)}), "
                    f"got {limits!r}"
                )
            unknown = sorted(set(limits) - set(_QUEUE_LIMIT_KEYS))
            if unknown:
                raise ConfigurationError(
                    f"{where} has unknown limits {unknown}; known: {', '.join(_QUEUE_LIMIT_KEYS)}"
                )
            try:
                configs.append(QueueConfig(name=name, **limits))
            except (ConfigurationError, TypeError, ValueError) as exc:
                raise ConfigurationError(f"{where}: {exc}") from exc
        return tuple(configs)
