"""`python -m experiments.dtd` and the partition runner in-process on tiny generated textures."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from experiments import dtd_partitions
from experiments.dtd import main
from tests.helpers.cli import tiny_demo_args

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "configs" / "dtd"
DEMO_CONFIG = str(CONFIG_DIR / "demo.yaml")
TINY_CONFIG = REPO / "tests" / "configs" / "dtd_tiny.yaml"
TINY_CLASSES = yaml.safe_load(TINY_CONFIG.read_text())["data"]["init_args"]["demo_classes"]


# Slow tier: an 8-epoch fit (about a minute); the fast tier keeps DTD fits through the CLI
# (test_partition_runner_nests_children_and_summarizes: one epoch per partition).
@pytest.mark.slow
def test_demo_trains_clearly_above_chance(tmp_path: Path, mlflow_uri: str) -> None:
    cli = main(["fit", "--config", DEMO_CONFIG, *tiny_demo_args(tmp_path, epochs=8, dataset="dtd")])
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="last", verbose=False)
    cli.trainer.logger.finalize("success")
    run = MlflowClient(mlflow_uri).get_run(cli.trainer.logger.run_id)
    chance = 1 / TINY_CLASSES
    # 0.77 measured (chance 0.17)
    assert run.data.metrics["test/acc_mean"] > chance + 0.3, run.data.metrics
    assert run.data.tags["mlflow.runName"] == "resnet20-srm-partition1_trainval"
    assert run.data.tags["dataset"] == "dtd" and cli.datamodule.domain_names == ["dtd"]


# Slow tier: two child fits through the partition runner (about 12 s).
@pytest.mark.slow
def test_partition_runner_nests_children_and_summarizes(tmp_path: Path, mlflow_uri: str) -> None:
    args = ["--config", DEMO_CONFIG, *tiny_demo_args(tmp_path, epochs=1, dataset="dtd")]
    summary = dtd_partitions.main([*args, "--partitions", "1", "2"])
    client = MlflowClient(mlflow_uri)
    parent = dtd_partitions.find_parent(client, "dtd", [DEMO_CONFIG, str(TINY_CONFIG)])
    children = dtd_partitions.finished_children(client, parent)
    assert sorted(children) == ["partition1", "partition2"]
    accuracies = [run.data.metrics["test/acc_mean"] for run in children.values()]
    assert summary["test/acc_mean"] == pytest.approx(statistics.fmean(accuracies))
    assert summary["test/acc_mean_std"] == pytest.approx(statistics.stdev(accuracies))
    assert parent.info.status == "FINISHED"
    # named by the stacked config files (base + overlay), tagged with all of them
    assert parent.data.tags["mlflow.runName"] == "demo+dtd_tiny-partitions"
    assert parent.data.tags["sweep_config"] == f"{DEMO_CONFIG} {TINY_CONFIG}"
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


def test_logger_settings_are_read_as_the_cli_reads_them(tmp_path: Path) -> None:
    # the config's own settings, then command-line overrides of them
    uri, name, tags = dtd_partitions.logger_settings(["--config", DEMO_CONFIG])
    assert (name, tags) == ("dtd", {"data": "demo"})
    other_uri = f"sqlite:///{tmp_path / 'other.db'}"
    overrides = [
        "--trainer.logger.init_args.experiment_name",
        "dtd-other",
        "--trainer.logger.init_args.tracking_uri",
        other_uri,
        "--trainer.logger.init_args.tags",
        '{"data": "mine", "note": "x"}',
    ]
    settings = dtd_partitions.logger_settings(["--config", DEMO_CONFIG, *overrides])
    assert settings == (other_uri, "dtd-other", {"data": "mine", "note": "x"})
    assert uri != other_uri


def test_runner_honours_logger_overrides_on_its_command_line(tmp_path: Path, mlflow_uri) -> None:
    args = ["--config", DEMO_CONFIG, *tiny_demo_args(tmp_path, epochs=1, dataset="dtd")]
    # --gather looks for the sweep in the overridden experiment (trains nothing)
    with pytest.raises(RuntimeError, match="MLflow experiment 'dtd-renamed'"):
        dtd_partitions.main(
            [*args, "--gather", "--trainer.logger.init_args.experiment_name", "dtd-renamed"]
        )


def test_configs_cover_every_module_pretrained_and_from_scratch() -> None:
    pretrained = yaml.safe_load((CONFIG_DIR / "resnet50.yaml").read_text())["model"]["init_args"]
    scratch = yaml.safe_load((CONFIG_DIR / "resnet56.yaml").read_text())["model"]["init_args"]
    assert (pretrained["backbone"], pretrained["weights"]) == ("resnet50", "IMAGENET1K_V1")
    assert (scratch["backbone"], scratch["weights"]) == ("resnet56", None)
    # every module is one overlay away from both (composition: tests/experiments/test_configs.py)
    for module in ("none", "se", "srm", "ge", "mssar"):
        overlay = yaml.safe_load((REPO / "configs" / "modules" / f"{module}.yaml").read_text())
        assert overlay == {"model": {"init_args": {"recalibration": module}}}
    assert (CONFIG_DIR / "demo.yaml").is_file()
