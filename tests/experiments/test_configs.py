"""Every shipped config parses and type-checks against the CLI (without training)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import yaml

from experiments.dtd import main as dtd_main
from experiments.officehome import main as officehome_main
from experiments.stylized_imagenet import main as stylized_imagenet_main

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
ENTRY_POINTS = {
    "dtd": dtd_main,
    "officehome": officehome_main,
    "stylized_imagenet": stylized_imagenet_main,
}


def shipped_configs() -> list[Path]:
    return sorted(p for p in CONFIG_DIR.glob("*/*.yaml") if p.parent.name in ENTRY_POINTS)


@pytest.mark.parametrize("config", shipped_configs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_parses_and_validates(config: Path) -> None:
    output = io.StringIO()
    with contextlib.redirect_stdout(output), pytest.raises(SystemExit) as exit_info:
        ENTRY_POINTS[config.parent.name](["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    resolved = yaml.safe_load(output.getvalue())
    original = yaml.safe_load(config.read_text())
    assert resolved["model"]["init_args"]["backbone"] == original["model"]["init_args"]["backbone"]
    assert resolved["data"]["class_path"] == original["data"]["class_path"]


def test_officehome_configs_cover_every_module_in_both_protocols() -> None:
    names = {p.name for p in (CONFIG_DIR / "officehome").glob("*.yaml")}
    for module in ("none", "se", "srm", "ge", "mssar"):
        assert f"resnet50_{module}_multi_domain.yaml" in names
        assert f"resnet50_{module}_leave_out_art.yaml" in names


@pytest.mark.parametrize(
    "overlay", sorted((CONFIG_DIR / "trainer").glob("*.yaml")), ids=lambda p: p.name
)
def test_trainer_overlays_compose_with_a_dataset_config(overlay: Path) -> None:
    output = io.StringIO()
    base = CONFIG_DIR / "officehome" / "resnet50_srm_multi_domain.yaml"
    with contextlib.redirect_stdout(output), pytest.raises(SystemExit):
        officehome_main(["fit", "--config", str(base), "--config", str(overlay), "--print_config"])
    resolved = yaml.safe_load(output.getvalue())
    assert resolved["trainer"]["strategy"] == "ddp"
    # the dataset config's settings survive the overlay
    assert resolved["model"]["init_args"]["recalibration"] == "srm"
    assert resolved["data"]["init_args"]["batch_size"] == 64
