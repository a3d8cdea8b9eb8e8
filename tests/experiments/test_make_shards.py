"""`python -m experiments.make_shards`: writes the config's splits as shards that the same
config then reads; refuses a finished output and a config that already reads shards."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from datamodules.data.shards import META_FILE
from datamodules.officehome import OfficeHomeDataModule
from experiments.make_shards import main
from tests.helpers.trees import make_officehome_tree

CLASSES = ("A", "B")


def write_config(tmp_path: Path) -> Path:
    root = tmp_path / "officehome"
    make_officehome_tree(root, {"Art": 4, "Clipart": 4, "Product": 4, "Real World": 4}, CLASSES)
    config = {
        "trainer": {"max_epochs": 1},
        "model": {"class_path": "lightning_modules.classifier.MultiDomainClassifier"},
        "data": {
            "class_path": "datamodules.officehome.OfficeHomeDataModule",
            "init_args": {"root": str(root), "image_size": 16, "num_workers": 0},
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_writes_the_config_splits_and_refuses_to_overwrite(tmp_path: Path, capsys) -> None:
    config, output = str(write_config(tmp_path)), tmp_path / "shards"
    args = ["--config", config, "--output", str(output), "--workers", "1", "--short-side", "16"]
    assert main(args) == 0
    assert f"train with: --data.init_args.shards {output}" in capsys.readouterr().out
    source = OfficeHomeDataModule(root=str(tmp_path / "officehome"), image_size=16)
    meta = json.loads((output / META_FILE).read_text())
    assert meta["complete"]
    assert meta["splits"] == {split: len(s) for split, s in source.split_samples.items() if len(s)}
    reader = OfficeHomeDataModule(root=str(tmp_path / "officehome"), shards=str(output))
    assert reader.split_counts() == source.split_counts()
    assert main(args) == 2
    assert "already holds finished shards" in capsys.readouterr().err
    assert main([*args, "--data.init_args.shards", str(output)]) == 2
    assert "--data.init_args.shards is set" in capsys.readouterr().err
