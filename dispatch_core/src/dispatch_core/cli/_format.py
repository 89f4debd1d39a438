"""Output helpers: tables, records, JSON, times, colour, output that survives a reader
going away, and the DURATION / ISO8601 parameter types."""

from __future__ import annotations

import contextlib
import enum
import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, Any, Literal

import attrs
import click

from dispatch_core.models import Truncated

__all__ = [
    "Column",
    "DURATION",
    "DATETIME",
    "NO_COLOR_ENV",
    "color_enabled",
    "echo_json",
    "echo_record",
    "echo_safely",
    "echo_table",
    "first_line",
    "is_terminal",
    "no_color",
    "settle_output",
    "silence_stream",
    "format_duration",
    "format_time",
    "relative_time",
    "to_jsonable",
]

NO_COLOR_ENV = "NO_COLOR"

_ELLIPSIS = "..."
_GAP = "  "
_MIN_WIDTH = 60
_FALLBACK_COLUMNS = 100


# -- terminals, colour and broken streams --------------------------------------------------------


def is_terminal(stream: IO[Any] | None = None) -> bool:
    """Whether ``stream`` (default: the current stdout) is a terminal."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):  # no isatty, or a closed stream
        return False


def no_color() -> bool:
    """Whether ``$NO_COLOR`` asks for no colour: any non-empty value does
    (https://no-color.org)."""
    return bool(os.environ.get(NO_COLOR_ENV))


def color_enabled(stream: IO[Any] | None = None) -> bool:
    """Whether output to ``stream`` (default: stdout) may be styled: only on a terminal, and
    never when ``$NO_COLOR`` is set. For plugin commands that style text themselves (or
    configure a server's log colours); ``click.echo`` in ``dispatch`` commands already obeys
    both rules."""
    return not no_color() and is_terminal(stream)


def silence_stream(stream: IO[Any]) -> None:
    """Point ``stream``'s file descriptor at ``os.devnull``: its reader is gone.

    What the stream still buffers then drains into the void, so neither later writes (a log
    line, the exit summary) nor the interpreter's flush at exit fail again; Python's docs
    recommend this for ``BrokenPipeError``. A stream without a descriptor is left alone.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    with contextlib.suppress(OSError, ValueError):
        stream.flush()


def echo_safely(message: str, *, err: bool = False) -> bool:
    """``click.echo`` for a long-running process: if the stream's reader is gone (a closed
    pipe, a vanished terminal), drop the message and silence the stream instead of raising.

    Returns:
        Whether the message was written.
    """
    try:
        click.echo(message, err=err)
    except (OSError, ValueError):  # BrokenPipeError, EIO, "I/O operation on closed file"
        silence_stream(sys.stderr if err else sys.stdout)
        return False
    return True


def settle_output() -> None:
    """Flush stdout and stderr, silencing a stream whose reader is gone, so that the
    interpreter's own flush at exit cannot fail (it would print a traceback to a dead stream
    and turn the exit status into 120)."""
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            silence_stream(stream)


# -- values ---------------------------------------------------------------------------------------


def format_time(value: datetime | None) -> str:
    """``2024-05-01 12:00:00 UTC``, or ``-`` for no time."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _short_span(seconds: float) -> str:
    """``45s``, ``12m``, ``3h``, ``5d``: the largest whole unit of ``seconds``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def format_duration(span: timedelta) -> str:
    """``1d12h``, ``90m`` → ``1h30m``: a compact duration, the inverse of ``DURATION``."""
    seconds = int(span.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def relative_time(value: datetime | None, now: datetime) -> str:
    """``in 5m``, ``3h ago`` or ``now``: a compact time for table cells."""
    if value is None:
        return "-"
    delta = (value - now).total_seconds()
    if abs(delta) < 1:
        return "now"
    span = _short_span(abs(delta))
    return f"in {span}" if delta > 0 else f"{span} ago"


def first_line(text: str | None) -> str:
    """The first non-blank line of ``text`` (``Type: message`` for a stored error)."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def _serialize(inst: Any, field: Any, value: Any) -> Any:
    """attrs ``value_serializer``: datetimes to ISO 8601, enums to values."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    return value


def to_jsonable(record: Any) -> dict[str, Any]:
    """An attrs record (a Job, a DLQEntry…) as a dict of JSON types.

    A body a listing left out (a :class:`~dispatch_core.models.Truncated`) is shown as the
    admin API shows it: ``null``, beside ``<name>_truncated: true``, ``<name>_preview`` and
    ``<name>_size``.
    """
    data = attrs.asdict(record, value_serializer=_serialize)
    for field in attrs.fields(type(record)):
        value = getattr(record, field.name)
        if isinstance(value, Truncated):
            data[field.name] = None
            data[f"{field.name}_truncated"] = True
            data[f"{field.name}_preview"] = value.preview
            data[f"{field.name}_size"] = value.size
    return data


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout."""
    click.echo(json.dumps(data, indent=2, default=str))


# -- tables ---------------------------------------------------------------------------------------


@attrs.frozen
class Column:
    """How one table column is laid out.

    Attributes:
        header: Column title (shown upper-case).
        max_width: Widest the column may be; ``None`` for no cap.
        shrink: Order in which columns give up width when the table is too wide
            (lowest first); ``None`` never shrinks.
        min_width: Narrowest a shrinking column may become.
        elide: Which end of a too-long cell is replaced by ``...``.
        align: ``left`` or ``right``.
    """

    header: str
    max_width: int | None = None
    shrink: int | None = None
    min_width: int = 8
    elide: Literal["left", "right"] = "right"
    align: Literal["left", "right"] = "left"


def terminal_width() -> int:
    """Columns available for tables (``$COLUMNS``, the terminal, else 100)."""
    return max(shutil.get_terminal_size((_FALLBACK_COLUMNS, 24)).columns, _MIN_WIDTH)


def _natural_widths(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> list[int]:
    """Each column's width for its longest cell, within its cap."""
    widths = []
    for i, col in enumerate(columns):
        natural = max([len(col.header), *(len(row[i]) for row in rows)])
        widths.append(min(natural, col.max_width) if col.max_width else natural)
    return widths


def layout(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> list[int]:
    """Column widths that fit ``width`` when the shrinkable columns allow it."""
    widths = _natural_widths(columns, rows)
    excess = sum(widths) + len(_GAP) * (len(columns) - 1) - width
    shrinkable = sorted(
        (i for i, c in enumerate(columns) if c.shrink is not None),
        key=lambda i: columns[i].shrink or 0,
    )
    for i in shrinkable:
        if excess <= 0:
            break
        floor = max(columns[i].min_width, len(columns[i].header))
        cut = min(excess, max(widths[i] - floor, 0))
        widths[i] -= cut
        excess -= cut
    return widths


def fit(text: str, width: int, elide: Literal["left", "right"] = "right") -> str:
    """``text`` cut to ``width`` characters, marking the cut with ``...``."""
    if len(text) <= width:
        return text
    if width <= len(_ELLIPSIS):
        return text[:width]
    keep = width - len(_ELLIPSIS)
    return _ELLIPSIS + text[-keep:] if elide == "left" else text[:keep] + _ELLIPSIS


#: Characters a terminal may act on rather than show: C0 controls but the newline (escape
#: sequences, OSC title and clipboard writes start with ESC), DEL, C1 controls, and the
#: bidirectional overrides that reorder what is shown.
_UNPRINTABLE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` safe to write to a terminal: every control character (a job's error, name or
    payload is written by whoever enqueued or ran it) shown as a ``\\xNN`` / ``\\uNNNN``
    escape instead of being acted on. Newlines are kept."""
    return _UNPRINTABLE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _render_row(columns: Sequence[Column], widths: Sequence[int], cells: Sequence[str]) -> str:
    """One table line: cells cut to their widths, aligned, joined."""
    out = []
    for col, w, cell in zip(columns, widths, cells, strict=True):
        text = fit(cell, w, col.elide)
        out.append(text.rjust(w) if col.align == "right" else text.ljust(w))
    return _GAP.join(out).rstrip()


def render_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None = None
) -> list[str]:
    """The lines of a table: a header then one line per row.

    Args:
        columns: The columns' layouts.
        rows: The cells, one list per row.
        width: Fit the table in this many characters (shrinking columns, eliding cells, and
            capping columns at their ``max_width``); ``None`` prints every cell whole.
    """
    rows = [[printable(cell) for cell in row] for row in rows]
    if width is None:
        widths = [max([len(c.header), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    else:
        widths = layout(columns, rows, width)
    header = _render_row(columns, widths, [c.header.upper() for c in columns])
    return [header, *(_render_row(columns, widths, row) for row in rows)]


def echo_table(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> None:
    """Print a table on stdout: fitted to the terminal's width on a terminal, and with every
    cell whole otherwise (piped into ``grep``, ``less`` or a file, nothing may be cut)."""
    lines = render_table(columns, rows, terminal_width() if is_terminal() else None)
    # click.echo strips the bold off a non-terminal, and under $NO_COLOR when the root group
    # is ours (DispatchGroup.make_context); the commands also run under other roots
    # (dispatch-flask mounts them on `flask dispatch`), so $NO_COLOR is checked here too.
    click.echo(lines[0] if no_color() else click.style(lines[0], bold=True))
    for line in lines[1:]:
        click.echo(line)


# -- records --------------------------------------------------------------------------------------


def _record_value(value: Any) -> str:
    """A field value for ``name: value`` output."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, default=str)


def echo_record(record: Any, *, long_fields: Sequence[str] = ()) -> None:
    """Print every field of an attrs record as ``name: value``; ``long_fields`` (tracebacks)
    come last, indented, in full."""
    data = {f.name: getattr(record, f.name) for f in attrs.fields(type(record))}
    short = {k: v for k, v in data.items() if k not in long_fields}
    pad = max(len(k) for k in data) + 1
    for key, value in short.items():
        click.echo(f"{key + ':':<{pad}} {printable(_record_value(value))}")
    for key in long_fields:
        text = data.get(key)
        if not text:
            click.echo(f"{key + ':':<{pad}} -")
            continue
        click.echo(f"{key}:")
        for line in str(text).rstrip().splitlines():
            click.echo(f"    {printable(line)}".rstrip())


# -- parameter types -----------------------------------------------------------------------------

_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_RE = re.compile(r"(?:\d+[wdhms])+")
_DURATION_PART = re.compile(r"(\d+)([wdhms])")


class DurationType(click.ParamType[timedelta]):
    """A span such as ``30d``, ``12h``, ``90m``, ``45s`` or ``1d12h``."""

    name = "DURATION"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        """Parse ``value`` into a positive :class:`timedelta`."""
        if isinstance(value, timedelta):
            return value
        text = str(value).strip().lower().replace(" ", "")
        if not _DURATION_RE.fullmatch(text):
            self.fail(
                f"{value!r} is not a duration; use a number and a unit (w, d, h, m, s), "
                "e.g. 30d, 12h, 90m, 45s or 1d12h",
                param,
                ctx,
            )
        seconds = sum(int(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))
        if seconds <= 0:
            self.fail(f"{value!r} is not a positive duration", param, ctx)
        return timedelta(seconds=seconds)


class DateTimeType(click.ParamType[datetime]):
    """An ISO 8601 date or date-time; one without a UTC offset is taken as UTC."""

    name = "ISO8601"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        """Parse ``value`` into a timezone-aware :class:`datetime`."""
        if isinstance(value, datetime):
            parsed = value
        else:
            try:
                parsed = datetime.fromisoformat(str(value).strip())
            except ValueError:
                self.fail(
                    f"{value!r} is not an ISO 8601 date or date-time, "
                    "e.g. 2024-05-01 or 2024-05-01T12:00:00+00:00",
                    param,
                    ctx,
                )
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


DURATION = DurationType()
DATETIME = DateTimeType()
