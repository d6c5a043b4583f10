"""TextGrid reading over praatio: point tiers, encodings, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from snnasr.data.textgrid import read_textgrid
from snnasr.io import DataError

SHORT = """File type = "ooTextFile"
Object class = "TextGrid"

0
1.5
<exists>
2
"IntervalTier"
"phones"
0
1.5
2
0
0.4
""
0.4
1.5
"AH0"
"TextTier"
"events"
0
1.5
1
0.7
"click"
"""


def test_point_tier_and_empty_intervals_kept(tmp_path: Path) -> None:
    path = tmp_path / "a.TextGrid"
    path.write_text(SHORT, encoding="utf-16")
    tg = read_textgrid(path)
    assert (tg.xmin, tg.xmax) == (0.0, 1.5)
    phones, events = tg.tier("phones"), tg.tier("EVENTS")
    assert phones.kind == "IntervalTier" and [iv.text for iv in phones.intervals] == ["", "AH0"]
    assert events.kind == "TextTier" and (events.intervals[0].xmin, events.intervals[0].text) == (0.7, "click")
    assert tg.tier("words") is None


@pytest.mark.parametrize(
    "content, message",
    [
        (b"ooBinaryFile\x08TextGrid\x00\x00", "binary TextGrid"),
        (b'File type = "ooTextFile"\nObject class = "TextGrid"\n\n0\n1\n<exists>\n3\n', "not a valid TextGrid"),
        (SHORT.replace('"events"', '"phones"').encode(), "not a valid TextGrid"),  # duplicate tier names
    ],
)
def test_bad_files_are_one_line_data_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.TextGrid"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        read_textgrid(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    with pytest.raises(DataError, match="unreadable TextGrid"):
        read_textgrid(tmp_path / "missing.TextGrid")
