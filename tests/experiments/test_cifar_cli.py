"""`python -m experiments.cifar` in-process on generated CIFAR-10 archives, read back through
MLflow, and the shipped CIFAR configs built into models of He et al.'s sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from datamodules.cifar import CIFARDataModule
from experiments.cifar import main
from lightning_modules.cli import StylebenchCLI
from tests.helpers.cli import tiny_demo_args
from tests.helpers.paths import REPO


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory):
    """One short fit + test of the demo, shared by the assertions below."""
    tmp_path = tmp_path_factory.mktemp("cifar-fit")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # MLflow's ./mlruns (artifacts) goes there
    try:
        cli = main(["fit", *tiny_demo_args(tmp_path, epochs=10, dataset="cifar10")])
        cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
        cli.trainer.logger.finalize("success")
    finally:
        monkeypatch.undo()
    return cli, MlflowClient(uri), cli.trainer.logger.run_id, tmp_path


# Slow tier: the module's 10-epoch CIFAR fit takes about 30 s.
@pytest.mark.slow
def test_demo_fit_logs_val_acc_to_mlflow_and_beats_chance(trained_run) -> None:
    cli, client, run_id, _ = trained_run
    run = client.get_run(run_id)
    metrics = run.data.metrics
    for key in ("val/acc/cifar10", "val/acc_mean", "test/acc/cifar10", "test/acc_mean"):
        assert key in metrics, sorted(metrics)
    assert len(client.get_metric_history(run_id, "val/acc_mean")) == 10
    assert client.get_experiment(run.info.experiment_id).name == "cifar10"
    assert run.data.tags["mlflow.runName"] == "resnet20-srm-val100"
    assert run.data.tags["dataset"] == "cifar10"
    assert cli.datamodule.domain_names == ["cifar10"]
    # 100 test images of 10 classes, chance 0.1; 0.53 measured (best of 10 epochs)
    assert metrics["test/acc_mean"] > 0.1 + 0.25, metrics
    assert cli.model.evaluation_results["test"]["cifar10"].sum().item() == 100


@pytest.mark.slow
def test_validate_and_test_subcommands_reproduce_the_best_checkpoint(
    trained_run, tmp_path: Path, mlflow_uri: str
) -> None:
    cli, client, run_id, _ = trained_run
    best = cli.trainer.checkpoint_callback.best_model_path
    validated = main(
        ["validate", *tiny_demo_args(tmp_path, epochs=10, dataset="cifar10"), "--ckpt_path", best]
    )
    logged = cli.trainer.checkpoint_callback.best_model_score.item()
    new_run = MlflowClient(mlflow_uri).get_run(validated.trainer.logger.run_id)
    assert new_run.data.tags["mlflow.runName"] == "resnet20-srm-val100-validate"
    assert new_run.data.metrics["val/acc_mean"] == pytest.approx(logged, abs=1e-6)
    tested = main(
        ["test", *tiny_demo_args(tmp_path, epochs=10, dataset="cifar10"), "--ckpt_path", best]
    )
    test_run = MlflowClient(mlflow_uri).get_run(tested.trainer.logger.run_id)
    expected = client.get_run(run_id).data.metrics["test/acc_mean"]
    assert test_run.data.metrics["test/acc_mean"] == pytest.approx(expected, abs=1e-6)


# He et al. 2016, Table 6: parameters of the CIFAR-10 ResNets (option A shortcuts).
HE_PARAMETERS_MILLIONS = {"resnet20": 0.27, "resnet32": 0.46, "resnet56": 0.85, "resnet110": 1.7}


@pytest.mark.parametrize(("backbone", "millions"), HE_PARAMETERS_MILLIONS.items())
def test_he_recipe_config_builds_the_papers_networks(
    backbone: str, millions: float, tmp_path: Path, mlflow_uri: str
) -> None:
    """configs/cifar10/resnet.yaml with a backbone override and the plain-ResNet overlay gives
    He et al.'s parameter counts (10-way classifier included), on the demo's files."""
    args = [
        "--config",
        str(REPO / "configs" / "cifar10" / "resnet.yaml"),
        "--config",
        str(REPO / "configs" / "modules" / "none.yaml"),
        "--model.init_args.backbone",
        backbone,
        "--data",
        "datamodules.cifar.CIFAR10DemoDataModule",
        "--data.init_args.root",
        "null",
        "--data.init_args.cache_dir",
        str(tmp_path.parent / "cifar-demo-cache"),
        "--data.init_args.images_per_class",
        "50",
        "--data.init_args.val_images",
        "100",
        "--trainer.accelerator",
        "cpu",
        "--trainer.precision",
        "32",
    ]
    # The CLI of `python -m experiments.cifar`, built without running a subcommand.
    cli = StylebenchCLI(datamodule_class=CIFARDataModule, args=args, run=False)
    count = sum(p.numel() for p in cli.model.parameters())
    decimals = 1 if millions >= 1 else 2
    assert round(count / 1e6, decimals) == millions, count
    config = yaml.safe_load((REPO / "configs" / "cifar10" / "resnet.yaml").read_text())
    optimizer = config["model"]["init_args"]["optimizer"]["init_args"]
    assert (optimizer["lr"], optimizer["momentum"], optimizer["weight_decay"]) == (0.1, 0.9, 1e-4)
    assert config["model"]["init_args"]["lr_scheduler"]["init_args"]["milestones"] == [82, 123]
    assert (
        config["trainer"]["max_epochs"] == 164 and config["data"]["init_args"]["batch_size"] == 128
    )
