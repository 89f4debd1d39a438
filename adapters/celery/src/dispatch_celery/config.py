"""``app.conf``: Celery's settings object, holding the settings dispatch_celery honours.

Settings are read by attribute or by key (``app.conf.task_always_eager`` or
``app.conf["task_always_eager"]``). A Celery setting that dispatch_celery cannot honour
(routing, exchanges, pickle, result backends, worker options) raises :class:`TypeError`
when it is set, instead of being ignored. Names outside Celery's namespaces are the
application's own and are kept as given.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from datetime import timedelta
from types import ModuleType
from typing import Any

__all__ = ["Settings", "DEFAULTS", "ENGINE_SETTINGS"]

#: The settings dispatch_celery honours, with Celery's defaults.
DEFAULTS: dict[str, Any] = {
    # where jobs are stored: a Dispatch store URL (see docs/adapters/celery.md)
    "broker_url": None,
    "result_backend": None,
    # testing
    "task_always_eager": False,
    "task_eager_propagates": False,
    # task defaults
    "task_default_queue": "celery",
    "task_default_priority": None,
    "task_time_limit": None,
    "task_acks_late": False,
    "task_track_started": False,
    "task_ignore_result": False,
    # serialisation: JSON only
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": None,
    # results: how long finished jobs are kept
    "result_expires": timedelta(days=1),
    # periodic tasks
    "beat_schedule": {},
    "timezone": None,
    "enable_utc": True,
    # accepted for compatibility; Dispatch retries the store connection anyway
    "broker_connection_retry_on_startup": None,
}

#: Settings read when the app builds its engine; changing them afterwards has no effect, so
#: it is refused.
ENGINE_SETTINGS = frozenset(
    {
        "broker_url",
        "result_expires",
        "task_default_queue",
        "task_default_priority",
        "task_time_limit",
    }
)

# Celery settings with a meaning dispatch_celery cannot honour, and what to do instead.
_REJECTED: dict[str, str] = {
    "task_routes": "routing is by queue name: give queue= to @app.task or apply_async",
    "task_queues": "queues need no declaration; Dispatch creates them on first use",
    "task_default_exchange": "kombu exchanges do not exist in Dispatch",
    "task_default_exchange_type": "kombu exchanges do not exist in Dispatch",
    "task_default_routing_key": "routing keys do not exist in Dispatch; use queues",
    "task_default_rate_limit": "rate limits are per queue: app.engine.queue(name, rate=...)",
    "task_annotations": "set options on @app.task instead",
    "task_soft_time_limit": "Dispatch has one (hard) time limit: task_time_limit",
    "task_compression": "jobs are stored uncompressed",
    "result_compression": "results are stored uncompressed",
    "task_publish_retry_policy": "enqueueing is a store write; it is not retried",
    "worker_concurrency": "use: dispatch worker --concurrency N",
    "worker_prefetch_multiplier": "use: dispatch worker --prefetch N",
    "beat_scheduler": "the cluster leader fires the beat schedule; there is no beat process",
}

# Prefixes of Celery's own setting names: an unknown name under one of them is a Celery
# setting dispatch_celery does not implement (refused); any other name is the app's own.
_CELERY_PREFIXES = (
    "task_",
    "result_",
    "broker_",
    "worker_",
    "beat_",
    "cache_",
    "redis_",
    "database_",
    "event_",
    "control_",
    "security_",
    "s3_",
    "mongodb_",
    "elasticsearch_",
    "cassandra_",
    "azureblockblob_",
)


def _unsupported(key: str, value: object, why: str) -> TypeError:
    return TypeError(
        f"setting {key}={value!r} is not supported by dispatch_celery: {why}",
    )


def _check_json_only(key: str, value: Any) -> None:
    if key in ("task_serializer", "result_serializer"):
        if value != "json":
            raise _unsupported(key, value, "arguments and results are JSON (pickle is refused)")
    elif key in ("accept_content", "result_accept_content"):
        if value is None:
            return
        accepted = [value] if isinstance(value, str) else list(value)
        other = [c for c in accepted if c not in ("json", "application/json")]
        if other:
            raise _unsupported(key, value, "only JSON content is accepted")


def check_setting(key: str, value: Any) -> None:
    """Raise :class:`TypeError` if ``key=value`` is a Celery setting dispatch_celery cannot
    honour."""
    if key in _REJECTED:
        raise _unsupported(key, value, _REJECTED[key])
    if key == "result_backend" and value is not None:
        raise _unsupported(
            key,
            value,
            "results are kept with each job in the Dispatch store; remove the result backend",
        )
    if key == "enable_utc" and value is not True:
        raise _unsupported(key, value, "datetimes without a timezone are read as UTC")
    expires_ok = value is None or isinstance(value, int | float | timedelta)
    if key == "result_expires" and not expires_ok:
        raise TypeError(f"setting result_expires={value!r}: expected seconds or a timedelta")
    _check_json_only(key, value)
    if key in DEFAULTS:
        return
    if key.isupper() and key.startswith(("CELERY_", "BROKER_", "CELERYD_", "CELERYBEAT_")):
        raise TypeError(
            f"setting {key!r}: old upper-case setting names are not supported by "
            "dispatch_celery; use the lower-case names (e.g. task_always_eager)"
        )
    if key.startswith(_CELERY_PREFIXES):
        raise TypeError(f"Celery setting {key!r} is not supported by dispatch_celery")


class Settings(MutableMapping[str, Any]):
    """Celery's ``app.conf``: a mapping with attribute access, checked on every write.

    Args:
        on_change: Called with the key before a change is stored (the app uses it to refuse
            changes to settings it has already used).
    """

    def __init__(self, on_change: Callable[[str], None] | None = None) -> None:
        object.__setattr__(self, "_data", dict(DEFAULTS))
        object.__setattr__(self, "_on_change", on_change)
        # Each default gets its own copy of the mutable values.
        self._data["beat_schedule"] = {}
        self._data["accept_content"] = ["json"]

    _data: dict[str, Any]
    _on_change: Callable[[str], None] | None

    # -- mapping ---------------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"setting names are strings, got {key!r}")
        check_setting(key, value)
        if self._on_change is not None and self._data.get(key, _MISSING) is not value:
            self._on_change(key)
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        if key in DEFAULTS:
            self[key] = DEFAULTS[key]
        else:
            del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<Settings {self._data!r}>"

    # -- attribute access ------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(f"no setting {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    # -- Celery's helpers ------------------------------------------------------------------------

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Set several settings, as ``dict.update`` (each is checked)."""
        for key, value in dict(other, **kwargs).items():
            self[key] = value

    def load(self, obj: object, namespace: str | None = None) -> None:
        """Set the settings held by ``obj`` (see :meth:`Celery.config_from_object`)."""
        for key, value in _settings_of(obj, namespace).items():
            self[key] = value


_MISSING = object()


def _settings_of(obj: object, namespace: str | None) -> dict[str, Any]:
    if isinstance(obj, str):
        module_name, _, attr = obj.partition(":")
        target: Any = importlib.import_module(module_name)
        for part in filter(None, attr.split(".")):
            target = getattr(target, part)
        obj = target
    if isinstance(obj, Mapping):
        items = dict(obj)
    else:
        # A module or a class: its public values (not the functions, classes and modules it
        # imports, such as crontab).
        items = {
            k: v
            for k in dir(obj)
            if not k.startswith("_")
            and not isinstance(v := getattr(obj, k), ModuleType)
            and not callable(v)
        }
    if namespace:
        prefix = namespace.rstrip("_") + "_"
        return {k[len(prefix) :].lower(): v for k, v in items.items() if k.startswith(prefix)}
    return items
