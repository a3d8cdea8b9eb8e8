"""Tests of `python -m datamodules.demo`: each subcommand writes its set and a grid."""

from __future__ import annotations

import pytest
from PIL import Image

from datamodules.demo.__main__ import main


def _grid_is_a_png(path) -> None:
    with Image.open(path) as grid:
        assert grid.format == "PNG"


def test_command_line_writes_data_and_grid(tmp_path, capsys):
    arguments = ["officehome", "--root", str(tmp_path / "oh"), "--num-classes", "2"]
    arguments += ["--images", "1", "--image-size", "32", "--grid", str(tmp_path / "grid.png")]
    main(arguments)
    assert len(list((tmp_path / "oh").rglob("*.jpg"))) == 4 * 2
    _grid_is_a_png(tmp_path / "grid.png")
    assert "wrote 8 images" in capsys.readouterr().out


def test_cue_conflict_command(tmp_path, capsys):
    arguments = ["cue_conflict", "--root", str(tmp_path / "cc"), "--num-classes", "2"]
    arguments += ["--images", "1", "--image-size", "24", "--style", "Real_World"]
    main([*arguments, "--grid", str(tmp_path / "cc.png")])
    assert sorted(p.name for p in (tmp_path / "cc").rglob("*.png")) == [
        "Circle1-Circle1.png",
        "Circle1-Triangle1.png",
        "Triangle1-Circle1.png",
        "Triangle1-Triangle1.png",
    ]
    _grid_is_a_png(tmp_path / "cc.png")
    assert "wrote 4 images" in capsys.readouterr().out


def test_dtd_command(tmp_path, capsys):
    arguments = ["dtd", "--root", str(tmp_path / "dtd"), "--num-classes", "2", "--images", "3"]
    main([*arguments, "--image-size", "16", "--seed", "1", "--grid", str(tmp_path / "d.png")])
    assert len(list((tmp_path / "dtd").glob("images/*/*.jpg"))) == 2 * 3
    assert len(list((tmp_path / "dtd").glob("labels/*.txt"))) == 30
    _grid_is_a_png(tmp_path / "d.png")
    out = capsys.readouterr().out
    assert "wrote 6 images" in out and "grid:" in out


def test_kind_is_required_and_options_belong_to_their_kind(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--root", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["dtd", "--root", str(tmp_path), "--style", "Art"])
    assert "--style" in capsys.readouterr().err
