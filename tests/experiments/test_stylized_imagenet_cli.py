"""In-process fit/test of the Stylized-ImageNet demo: both domains evaluated, shape bias logged."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from experiments.stylized_imagenet import main

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs/stylized_imagenet/demo.yaml"


def tiny_demo_config(tmp_path: Path, epochs: int = 3) -> str:
    """The demo config, shrunk: 3 classes, 12 training images per class and domain, 32 px."""
    config = yaml.safe_load(DEMO_CONFIG.read_text())
    cache = str(tmp_path / "demo-cache")
    config["data"]["init_args"].update(
        demo_classes=3,
        images_per_class=12,
        val_images_per_class=4,
        demo_image_size=40,
        cache_dir=cache,
        image_size=32,
        resize_size=36,
        batch_size=12,
        num_workers=0,
    )
    (shape_bias,) = config["trainer"]["callbacks"]
    shape_bias["init_args"].update(
        demo_classes=3, demo_images_per_pair=2, demo_image_size=40, cache_dir=cache
    )
    config["trainer"].update(
        max_epochs=epochs, enable_progress_bar=False, default_root_dir=str(tmp_path / "outputs")
    )
    config["model"]["init_args"]["lr_scheduler"]["init_args"]["T_max"] = epochs
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_demo_fit_then_test_logs_both_domains_and_shape_bias(tmp_path, mlflow_uri) -> None:
    cli = main(["fit", "--config", tiny_demo_config(tmp_path)])
    assert list(cli.model.head.heads) == ["stylized"]  # imagenet is evaluated only
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
    cli.trainer.logger.finalize("success")
    client = MlflowClient(mlflow_uri)
    run_id = cli.trainer.logger.run_id
    run = client.get_run(run_id)
    metrics = run.data.metrics
    for key in ("val/acc/stylized", "val/acc/imagenet", "test/acc/stylized", "test/acc/imagenet"):
        assert key in metrics
    assert run.data.tags["protocol"] == "train_sin"
    assert client.get_experiment(run.info.experiment_id).name == "stylized_imagenet"
    assert 0.0 <= metrics["test/shape_bias"] <= 1.0
    # 3 shapes x 3 textures x 2 images; the 6 same-class images are excluded
    counted = sum(metrics[f"test/cue_conflict_{d}"] for d in ("shape", "texture", "other"))
    assert counted == 12
    artifact = Path(client.download_artifacts(run_id, "shape_bias/decisions.csv"))
    rows = list(csv.DictReader(artifact.open()))
    assert len(rows) == 18
    assert {row["decision"] for row in rows} <= {"shape", "texture", "other", "excluded"}
    assert sum(row["decision"] == "excluded" for row in rows) == 6
    hits = [row["decision"] for row in rows if row["decision"] in ("shape", "texture")]
    if hits:
        # Logged as a float32 metric, so equal up to float32 rounding (4/9 is 0.44444445).
        assert metrics["test/shape_bias"] == pytest.approx(hits.count("shape") / len(hits), 1e-6)


def test_configs_cover_every_module_with_the_sin_recipe() -> None:
    for module in ("none", "se", "srm", "ge", "mssar"):
        config = yaml.safe_load((DEMO_CONFIG.parent / f"resnet50_{module}_sin.yaml").read_text())
        assert config["model"]["init_args"]["recalibration"] == module
        assert config["model"]["init_args"]["optimizer"]["init_args"] == {
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 0.0001,
        }
        assert config["model"]["init_args"]["lr_scheduler"]["init_args"]["milestones"] == [30, 60]
        assert config["trainer"]["max_epochs"] == 90
        assert config["data"]["init_args"]["batch_size"] == 256
