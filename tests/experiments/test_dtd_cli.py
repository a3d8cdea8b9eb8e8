"""`python -m experiments.dtd` and the partition runner in-process on tiny generated textures."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
from mlflow import MlflowClient

from experiments import dtd_partitions
from experiments.dtd import main

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "dtd"
DEMO_CONFIG = str(CONFIG_DIR / "demo.yaml")
TINY_CLASSES = 6


def tiny_demo_args(tmp_path: Path, epochs: int) -> list[str]:
    """The demo config, shrunk: 6 classes of 90 images (60 trained on), 32 px."""
    settings = {
        "data.init_args.demo_classes": TINY_CLASSES,
        "data.init_args.images_per_class": 90,
        "data.init_args.demo_image_size": 32,
        "data.init_args.cache_dir": tmp_path.parent / "dtd-demo-cache",
        "data.init_args.image_size": 32,
        "data.init_args.resize_size": 32,
        "data.init_args.batch_size": 16,
        "data.init_args.num_workers": 0,
        "trainer.max_epochs": epochs,
        "model.init_args.lr_scheduler.init_args.T_max": epochs,
        "trainer.enable_progress_bar": "false",
        "trainer.default_root_dir": tmp_path / "outputs",
    }
    return [item for key, value in settings.items() for item in (f"--{key}", str(value))]


def test_demo_trains_clearly_above_chance(tmp_path: Path, mlflow_uri: str) -> None:
    cli = main(["fit", "--config", DEMO_CONFIG, *tiny_demo_args(tmp_path, epochs=8)])
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="last", verbose=False)
    cli.trainer.logger.finalize("success")
    run = MlflowClient(mlflow_uri).get_run(cli.trainer.logger.run_id)
    chance = 1 / TINY_CLASSES
    # 0.77 measured (chance 0.17)
    assert run.data.metrics["test/acc_mean"] > chance + 0.3, run.data.metrics
    assert run.data.tags["mlflow.runName"] == "resnet20-srm-partition1_trainval"
    assert run.data.tags["dataset"] == "dtd" and cli.datamodule.domain_names == ["dtd"]


def test_partition_runner_nests_children_and_summarizes(tmp_path: Path, mlflow_uri: str) -> None:
    args = ["--config", DEMO_CONFIG, *tiny_demo_args(tmp_path, epochs=1)]
    summary = dtd_partitions.main([*args, "--partitions", "1", "2"])
    client = MlflowClient(mlflow_uri)
    parent = dtd_partitions.find_parent(client, "dtd", DEMO_CONFIG)
    children = dtd_partitions.finished_children(client, parent)
    assert sorted(children) == ["partition1", "partition2"]
    accuracies = [run.data.metrics["test/acc_mean"] for run in children.values()]
    assert summary["test/acc_mean"] == pytest.approx(statistics.fmean(accuracies))
    assert summary["test/acc_mean_std"] == pytest.approx(statistics.stdev(accuracies))
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["test/acc_mean"] == pytest.approx(summary["test/acc_mean"])
    assert children["partition2"].data.tags["protocol"] == "partition2_trainval"
    assert children["partition2"].data.tags["data"] == "demo"  # the config's own tags are kept
    # gather reads the finished children again, trains nothing
    assert dtd_partitions.main([*args, "--gather"]) == pytest.approx(summary)
    # resuming under the same parent skips the finished partitions
    again = dtd_partitions.main(
        [*args, "--partitions", "1", "2", "--parent-run-id", parent.info.run_id]
    )
    assert again == pytest.approx(summary)
    assert len(client.search_runs([parent.info.experiment_id])) == 3


def test_configs_cover_every_module_pretrained_and_from_scratch() -> None:
    names = {p.name for p in CONFIG_DIR.glob("*.yaml")}
    for module in ("none", "se", "srm", "ge", "mssar"):
        assert f"resnet50_{module}.yaml" in names
        assert f"resnet56_{module}.yaml" in names
    assert "demo.yaml" in names
