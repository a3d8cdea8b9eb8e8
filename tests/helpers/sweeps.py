"""Sweep files written for a test."""

from __future__ import annotations

from pathlib import Path

import yaml

DEMO = "configs/officehome/demo.yaml"


def write(tmp_path: Path, **settings) -> Path:
    spec = {"name": "t", "entry": "officehome", "configs": [DEMO], **settings}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path
