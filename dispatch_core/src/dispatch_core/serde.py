"""Payload (de)serialisation: one private cattrs converter per engine; what a result and an
error text must be for every store to hold them."""

from __future__ import annotations

import json
import math
from typing import Any

import cattrs
from cattrs.preconf.json import make_converter as _json_converter

from dispatch_core._json import make_json_encoder
from dispatch_core.errors import PayloadError, ResultError

__all__ = [
    "DEFAULT_MAX_RESULT_BYTES",
    "make_converter",
    "to_json_payload",
    "from_json_payload",
    "check_result",
    "storable_error",
]

#: Default of the worker's ``max_result_bytes``: the largest result, as compact UTF-8 JSON,
#: a worker records. Far below what every store holds (PostgreSQL's jsonb: 256 MiB, Redis:
#: 512 MiB, SQLite: 1 GB) and equal to the admin API's body limit, so what a result may be
#: is what a payload sent to the API may be; a queue is not a blob store.
DEFAULT_MAX_RESULT_BYTES = 10 * 1024 * 1024


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
    if tp is not Any:
        try:
            converter.structure(raw, tp)
        except Exception as exc:
            raise PayloadError(job_name, _problems(exc)) from exc
    _check_payload(job_name, raw)
    return raw


def _check_payload(job_name: str, raw: Any) -> None:
    """Refuse a payload no store can hold: not JSON (NaN, ``1e400`` parsed as infinity, an
    integer the ``json`` module cannot write, an object), or not UTF-8 (a lone surrogate),
    with what and where, before anything is written."""
    try:
        text = _encode_strict(raw)
    except (TypeError, ValueError, RecursionError) as exc:
        found = _locate(raw) or f"not JSON-serialisable: {exc} @ $"
        raise PayloadError(job_name, [found]) from None
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise PayloadError(job_name, [_locate(raw) or str(exc)]) from None


def from_json_payload(converter: cattrs.Converter, job_name: str, tp: Any, raw: Any) -> Any:
    """Rebuild the typed payload from its JSON form (on the worker)."""
    if tp is Any:
        return raw
    try:
        return converter.structure(raw, tp)
    except Exception as exc:
        raise PayloadError(job_name, _problems(exc)) from exc


# -- results and error texts -----------------------------------------------------------------


#: Compact JSON text as the stores write it, except that NaN and the infinities are refused:
#: they are not JSON, and PostgreSQL's jsonb rejects them.
_encode_strict = make_json_encoder(allow_nan=False)


def check_result(job_id: str, value: Any, max_bytes: int | None) -> None:
    """Check that every store can hold ``value`` as a job's result.

    It must be JSON (no NaN or infinity, no integer the ``json`` module cannot write), encodable
    as UTF-8 (no lone surrogate such as ``"\\ud800"``), and, with ``max_bytes``, at most that
    many bytes of compact UTF-8 JSON. A small result costs one encode; only a refused one is
    walked, to say where the problem is.

    Raises:
        ResultError: the value cannot be stored; the message gives what and where
            (``lone surrogate '\\ud800' at $.a[3]``).
    """
    if max_bytes is not None and type(value) is str and len(value) > max_bytes:
        _too_big(job_id, len(value), max_bytes, at_least=True)  # no need to encode it
    try:
        text = _encode_strict(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ResultError(job_id, _locate(value) or f"not JSON-serialisable: {exc}") from None
    if text.isascii():  # O(1) in CPython: the common case needs no second pass
        size = len(text)
    else:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise ResultError(job_id, _locate(value) or str(exc)) from None
    if max_bytes is not None and size > max_bytes:
        _too_big(job_id, size, max_bytes)


def _too_big(job_id: str, size: int, limit: int, *, at_least: bool = False) -> None:
    raise ResultError(
        job_id,
        f"it is {'at least ' if at_least else ''}{_bytes(size)} as JSON, over "
        f"max_result_bytes={limit:,} ({_bytes(limit)}); store large data elsewhere and "
        "return a reference to it",
    )


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


def _key_path(path: str, key: Any) -> str:
    if isinstance(key, str) and key.isidentifier() and key.isascii():
        return f"{path}.{key}"
    # ensure_ascii escapes surrogates and control characters: the path itself is storable.
    return f"{path}[{json.dumps(key if isinstance(key, str) else str(key))}]"


def _locate(value: Any) -> str | None:
    """What in ``value`` stops it from being stored, and where (``$.a[3]``)."""
    try:
        return _problem(value, "$")
    except RecursionError:
        return "it is nested too deeply (or refers to itself)"


def _problem(value: Any, path: str) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return _surrogate(value, f"at {path}")
    if isinstance(value, int):
        try:
            int.__repr__(value)
        except ValueError:  # sys.set_int_max_str_digits: the json module cannot write it
            return f"an integer of about {int(value.bit_length() * 0.30103):,} digits at {path}"
        return None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return f"the number {value!r} at {path} (JSON has no NaN or Infinity)"
    if isinstance(value, dict):
        for key, item in value.items():
            if key is not None and not isinstance(key, str | int | float | bool):
                return f"a key of type {type(key).__name__} at {path} (JSON keys are strings)"
            if isinstance(key, str) and (found := _surrogate(key, f"in a key at {path}")):
                return found
            if (found := _problem(item, _key_path(path, key))) is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if (found := _problem(item, f"{path}[{i}]")) is not None:
                return found
        return None
    return (
        f"a value of type {type(value).__name__} at {path}, which is not JSON (use JSON "
        "types, or an attrs class or dataclass of them)"
    )


def _surrogate(text: str, where: str) -> str | None:
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"lone surrogate {text[exc.start]!r} {where}"
    return None


#: Longest error text recorded; longer ones keep their head (type and message) and tail
#: (where the traceback ends). ``format_error`` bounds the traceback but not the message.
_ERROR_HEAD = 10_000
_ERROR_TAIL = 4_000


def storable_error(text: str) -> str:
    """``text`` made storable by every store: cut to about 14,000 characters, and lone
    surrogates written as escapes (``\\ud800``). A failure must always be recordable, so an
    error text is repaired, never refused."""
    if len(text) > _ERROR_HEAD + _ERROR_TAIL:
        cut = len(text) - _ERROR_HEAD - _ERROR_TAIL
        text = f"{text[:_ERROR_HEAD]}\n[... {cut:,} characters cut ...]\n{text[-_ERROR_TAIL:]}"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
