"""The cue-conflict file-name format and reading a stimuli folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.data.cue_conflict import (
    cue_conflict_name,
    parse_cue_conflict_name,
    scan_cue_conflict,
)
from tests.helpers.trees import write_jpeg


def test_names_that_would_not_read_back_are_refused():
    assert cue_conflict_name("Lightning_Bolt", 12, "Star", 3) == ("Lightning_Bolt12-Star3.png")
    with pytest.raises(ValueError, match="does not read back"):
        cue_conflict_name("Shape2", 1, "Star", 1)


def test_parse_cue_conflict_name():
    assert parse_cue_conflict_name("Lightning_Bolt12-Star3.png") == (
        "Lightning_Bolt",
        12,
        "Star",
        3,
    )
    with pytest.raises(ValueError, match="cue-conflict name"):
        parse_cue_conflict_name("Circle.png")


def test_scan_checks_names_against_the_folders(tmp_path: Path) -> None:
    for shape, texture in (("cat", "bear"), ("bear", "cat"), ("bear", "bear")):
        write_jpeg(
            tmp_path / shape / cue_conflict_name(shape, 1, texture, 2),
            seed=1,
        )
    categories, images = scan_cue_conflict(tmp_path)
    assert categories == ["bear", "cat"]
    assert [(i.shape, i.texture) for i in images] == [
        ("bear", "bear"),
        ("bear", "cat"),
        ("cat", "bear"),
    ]
    write_jpeg(tmp_path / "cat" / cue_conflict_name("bear", 1, "cat", 1), seed=2)
    with pytest.raises(ValueError, match="are not categories"):
        scan_cue_conflict(tmp_path)
