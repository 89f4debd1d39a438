"""``Truncated``: the cut to a number of bytes on a whole character, and the filters' checks."""

from __future__ import annotations

import pytest

from dispatch_core import DLQFilter, JobFilter, Truncated
from dispatch_core.workflows import RunFilter


@pytest.mark.parametrize(
    ("text", "limit", "cut"),
    [
        ("abcdef", 3, "abc"),
        ("abc", 10, "abc"),
        ("é" * 5, 5, "éé"),  # 4 bytes: the third would end at byte 6
        ("é" * 5, 6, "ééé"),
        ("a€b", 3, "a"),  # the euro sign takes bytes 2 to 4
        ("a€b", 4, "a€"),
        ("\U0001f600x", 3, ""),
        ("\U0001f600x", 5, "\U0001f600x"),
        ("anything", 0, ""),
    ],
)
def test_cut_keeps_whole_characters_within_the_bytes(text: str, limit: int, cut: str) -> None:
    assert Truncated.cut(text, limit) == cut
    assert len(cut.encode()) <= limit


def test_of_measures_compact_json_in_bytes() -> None:
    assert Truncated.of({"a": [1, 2]}, 13) == {"a": [1, 2]}  # {"a":[1,2]} is 11 bytes
    assert Truncated.of({"a": [1, 2]}, 10) == Truncated(preview='{"a":[1,2]', size=11)
    assert Truncated.of("é" * 10, 21) == Truncated(preview='"' + "é" * 10, size=22)
    assert Truncated.of(None, 0) is None  # no result: nothing to cut
    big = ["x"] * 1000
    assert Truncated.of(big, None) is big


@pytest.mark.parametrize("kind", [JobFilter, DLQFilter, RunFilter])
def test_a_filter_refuses_a_negative_preview(kind: type) -> None:
    assert kind(preview=0).preview == 0
    with pytest.raises(ValueError, match="preview"):
        kind(preview=-1)
