"""In-process fit/test of the Stylized-ImageNet demo: both domains evaluated, shape bias logged."""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from experiments.stylized_imagenet import main
from tests.helpers.cli import tiny_demo_args

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "configs"


def resolved(*args: str) -> dict:
    """`fit --print_config` of these arguments, as a dict."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output), pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(output.getvalue())


def test_demo_fit_then_test_logs_both_domains_and_shape_bias(tmp_path, mlflow_uri) -> None:
    cli = main(["fit", *tiny_demo_args(tmp_path, epochs=3, dataset="stylized_imagenet")])
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


def test_tiny_overlay_keeps_a_single_shape_bias_callback(tmp_path) -> None:
    (callback,) = resolved(*tiny_demo_args(tmp_path, epochs=3, dataset="stylized_imagenet"))[
        "trainer"
    ]["callbacks"]
    assert callback["class_path"].endswith("ShapeBiasCallback")
    assert callback["init_args"]["cache_dir"] == str(tmp_path / "demo-cache")
    assert callback["init_args"]["demo_classes"] == 3


@pytest.mark.parametrize("module", ["none", "se", "srm", "ge", "mssar"])
def test_configs_cover_every_module_with_the_sin_recipe(module) -> None:
    base = CONFIG_DIR / "stylized_imagenet" / "sin.yaml"
    recipe = yaml.safe_load(base.read_text())
    assert recipe["model"]["init_args"]["optimizer"]["init_args"] == {
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 0.0001,
    }
    # the module overlay changes the module and keeps the recipe
    config = resolved(
        "--config", str(base), "--config", str(CONFIG_DIR / "modules" / f"{module}.yaml")
    )
    assert config["model"]["init_args"]["recalibration"] == module
    optimizer = config["model"]["init_args"]["optimizer"]["init_args"]
    assert {key: optimizer[key] for key in ("lr", "momentum", "weight_decay")} == {
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 0.0001,
    }
    assert config["model"]["init_args"]["lr_scheduler"]["init_args"]["milestones"] == [30, 60]
    assert config["trainer"]["max_epochs"] == 90
    assert config["data"]["init_args"]["batch_size"] == 256
