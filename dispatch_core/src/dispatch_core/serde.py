"""Payload (de)serialisation: one private cattrs converter per engine."""

from __future__ import annotations

import json
from typing import Any

import cattrs
from cattrs.preconf.json import make_converter as _json_converter

from dispatch_core.errors import PayloadError

__all__ = ["make_converter", "to_json_payload", "from_json_payload"]


def _strict(tp: type) -> Any:
    # cattrs coerces by default (int("5") == 5); a queue should refuse wrong types instead.
    def structure(value: Any, _: Any) -> Any:
        if tp is float and type(value) is int:
            return float(value)
        if type(value) is not tp:
            raise TypeError(f"expected {tp.__name__}, got {type(value).__name__} {value!r}")
        return value

    return structure


def make_converter() -> cattrs.Converter:
    """A JSON-preset converter that structures primitives strictly."""
    converter = _json_converter()
    for tp in (int, float, str, bool):
        converter.register_structure_hook(tp, _strict(tp))
    return converter


def _problems(exc: BaseException) -> list[str]:
    if isinstance(exc, cattrs.BaseValidationError | cattrs.ClassValidationError):
        return cattrs.transform_error(exc, path="$")
    return [f"{exc} @ $"]


def to_json_payload(converter: cattrs.Converter, job_name: str, tp: Any, payload: Any) -> Any:
    """Validate ``payload`` against ``tp`` and return its JSON form.

    Raises:
        PayloadError: the payload does not fit ``tp``; the message gives the field path.
    """
    try:
        # Unstructure by the runtime type, so a dict given for an attrs class is accepted
        # here and then checked field by field below.
        raw = converter.unstructure(payload)
    except Exception as exc:
        raise PayloadError(job_name, [f"cannot serialise {type(payload).__name__}: {exc}"]) from exc
    if tp is Any:
        try:
            json.dumps(raw)
        except (TypeError, ValueError) as exc:
            raise PayloadError(job_name, [f"not JSON-serialisable: {exc} @ $"]) from exc
        return raw
    try:
        converter.structure(raw, tp)
    except Exception as exc:
        raise PayloadError(job_name, _problems(exc)) from exc
    return raw


def from_json_payload(converter: cattrs.Converter, job_name: str, tp: Any, raw: Any) -> Any:
    """Rebuild the typed payload from its JSON form (on the worker)."""
    if tp is Any:
        return raw
    try:
        return converter.structure(raw, tp)
    except Exception as exc:
        raise PayloadError(job_name, _problems(exc)) from exc
