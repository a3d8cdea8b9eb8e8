"""`ParsedConfig`: a training config read through the training CLI's parser, built lazily."""

from __future__ import annotations

from pathlib import Path

import torch

from datamodules.officehome import OfficeHomeDemoDataModule
from lightning_modules.cli import ParsedConfig

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "configs" / "officehome" / "demo.yaml")


def test_stacked_configs_and_overrides_are_parsed_as_training_parses_them() -> None:
    parsed = ParsedConfig(
        args=[
            "--config",
            DEMO,
            "--config",
            str(REPO / "configs" / "modules" / "se.yaml"),
            "--trainer.logger.init_args.experiment_name",
            "elsewhere",
        ]
    )
    config = parsed.config
    assert config.model.init_args.recalibration == "se"  # the overlay
    assert config.trainer.logger.init_args.experiment_name == "elsewhere"  # the override
    assert config.data.init_args.demo_classes == 6  # the base
    assert config.seed_everything == 0
    # nothing was built
    for attribute in ("model", "datamodule", "trainer"):
        assert not hasattr(parsed, attribute)


def test_parsing_leaves_the_random_state_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ParsedConfig(args=["--config", DEMO])
    assert torch.equal(torch.rand(3), expected)


def test_instantiate_data_builds_the_configured_datamodule(tmp_path: Path) -> None:
    parsed = ParsedConfig(
        args=[
            "--config",
            DEMO,
            "--data.init_args.domains",
            "[Art, Clipart]",
            "--data.init_args.cache_dir",
            str(tmp_path),
        ]
    )
    datamodule = parsed.instantiate_data()
    assert isinstance(datamodule, OfficeHomeDemoDataModule)
    assert datamodule.domain_names == ["Art", "Clipart"]
    assert not hasattr(parsed, "model")
