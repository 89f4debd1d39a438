"""The API's JSON shapes: Dispatch's models to JSON and back.

Models are unstructured field by field (cattrs) with datetimes as ISO 8601 UTC strings ending
in ``Z`` (``2026-11-28T01:02:03.456789Z``), enums as their values, tuples as lists, and
payloads, results, inputs and outputs as the JSON they already are. A :class:`~dispatch_core.
Job` leaves out ``attempt_token``, the fencing secret of a running attempt.

Listings carry previews: a body (``payload``, ``result``, a run's ``input`` or ``output``)
that a listing left out (a :class:`~dispatch_core.models.Truncated`) is sent as ``null`` with
three more fields beside it, ``<name>_truncated: true``, ``<name>_preview`` (the start of its
JSON text) and ``<name>_size`` (the length of that text in bytes of UTF-8); a whole body is
sent as itself, without them. Decoding turns them back into a ``Truncated``.

The client of the API decodes with the same module::

    job = from_json(response.json(), Job)
    jobs = from_json(page["items"], list[Job])
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, overload

import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from starlette.responses import JSONResponse as _StarletteJSONResponse

from dispatch_core.cron import CronEntry
from dispatch_core.models import DLQEntry, Job, Truncated
from dispatch_core.workflows.models import WorkflowRun

__all__ = [
    "to_json",
    "from_json",
    "format_datetime",
    "parse_datetime",
    "JSONResponse",
    "BODY_FIELDS",
]

T = TypeVar("T")


def format_datetime(value: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a ``Z``; a naive value is taken to be UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_datetime(value: str) -> datetime:
    """The timezone-aware datetime of an ISO 8601 string (``Z`` or an offset).

    Raises:
        ValueError: not ISO 8601, or without a timezone.
    """
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no timezone (add Z or an offset such as +02:00)")
    return parsed.astimezone(UTC)


def _structure_datetime(value: Any, _: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO 8601 string, got {type(value).__name__}")
    return parse_datetime(value)


#: The fields of each model that hold a body, which a listing may send as a preview.
BODY_FIELDS: dict[type[Any], tuple[str, ...]] = {
    Job: ("payload", "result"),
    DLQEntry: ("payload",),
    WorkflowRun: ("input", "output"),
}


def _unstructure_previews(
    fields: tuple[str, ...], plain: Callable[[Any], dict[str, Any]]
) -> Callable[[Any], dict[str, Any]]:
    """``plain``, with each of ``fields`` that holds a :class:`Truncated` sent as ``null``
    beside ``<name>_truncated``, ``<name>_preview`` and ``<name>_size``."""

    def unstructure(obj: Any) -> dict[str, Any]:
        data = plain(obj)
        for name in fields:
            value = getattr(obj, name)
            if isinstance(value, Truncated):
                data[name] = None
                data[f"{name}_truncated"] = True
                data[f"{name}_preview"] = value.preview
                data[f"{name}_size"] = value.size
        return data

    return unstructure


def _structure_previews(
    cls: type[T], fields: tuple[str, ...], plain: Callable[[Any, Any], T]
) -> Callable[[Any, Any], T]:
    """``plain``, reading the fields :func:`_unstructure_previews` adds back into a
    :class:`Truncated`."""

    def structure(data: Any, _: Any) -> T:
        if isinstance(data, dict) and any(f"{name}_truncated" in data for name in fields):
            data = dict(data)
            for name in fields:
                truncated = data.pop(f"{name}_truncated", False)
                preview = data.pop(f"{name}_preview", None)
                size = data.pop(f"{name}_size", None)
                if truncated is not True:
                    continue
                if not isinstance(preview, str) or type(size) is not int or size < 0:
                    raise ValueError(
                        f"{name}_truncated needs {name}_preview (a string) and "
                        f"{name}_size (a count of bytes)"
                    )
                data[name] = Truncated(preview=preview, size=size)
        return plain(data, cls)

    return structure


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter()
    converter.register_unstructure_hook(datetime, format_datetime)
    converter.register_structure_hook(datetime, _structure_datetime)
    # StrEnums are strs, which cattrs would pass through as enum members: give plain values.
    converter.register_unstructure_hook(enum.StrEnum, lambda v: v.value)
    plain_unstructure: dict[type[Any], Callable[[Any], dict[str, Any]]] = {
        Job: make_dict_unstructure_fn(Job, converter, attempt_token=override(omit=True)),
        DLQEntry: make_dict_unstructure_fn(DLQEntry, converter),
        WorkflowRun: make_dict_unstructure_fn(WorkflowRun, converter),
    }
    for cls, fields in BODY_FIELDS.items():
        converter.register_unstructure_hook(
            cls, _unstructure_previews(fields, plain_unstructure[cls])
        )
        converter.register_structure_hook(
            cls, _structure_previews(cls, fields, make_dict_structure_fn(cls, converter))
        )
    plain_cron = make_dict_unstructure_fn(CronEntry, converter)

    def cron_json(entry: CronEntry) -> dict[str, Any]:
        return {**plain_cron(entry), "next_runs": [format_datetime(t) for t in next_runs(entry)]}

    converter.register_unstructure_hook(CronEntry, cron_json)
    return converter


#: How many upcoming ticks a cron entry's JSON lists in ``next_runs``.
NEXT_RUNS = 5


def next_runs(entry: CronEntry, count: int = NEXT_RUNS) -> list[datetime]:
    """The entry's next ``count`` ticks from ``next_run_at`` (none while it is disabled),
    computed in its timezone as the leader will fire them."""
    if not entry.enabled:
        return []
    ticks = [entry.next_run_at]
    schedule = entry.schedule()
    while len(ticks) < count:
        ticks.append(schedule.next_after(ticks[-1]))
    return ticks


_converter = _make_converter()


def to_json(obj: Any) -> Any:
    """The JSON form (dicts, lists, strings, numbers...) of a model, or of a list or dict of
    models: Job, DLQEntry, WorkflowRun, StepRecord, CronEntry, QueueStats, WorkerInfo,
    ThroughputBucket."""
    return _converter.unstructure(obj)


@overload
def from_json(data: Any, cls: type[T]) -> T: ...


@overload
def from_json(data: Any, cls: Any) -> Any: ...


def from_json(data: Any, cls: Any) -> Any:
    """The model (or ``list[Model]``...) ``cls`` rebuilt from the JSON :func:`to_json` made.

    Raises:
        cattrs.BaseValidationError: ``data`` does not have the shape of ``cls``.
    """
    return _converter.structure(data, cls)


class JSONResponse(_StarletteJSONResponse):
    """Compact UTF-8 JSON. JSON has no NaN or infinity: a payload a Python producer stored
    with one is sent with ``null`` in its place rather than as invalid JSON (or an error)."""

    def render(self, content: Any) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except ValueError:
            text = json.dumps(_finite(content), ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8", "replace")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
