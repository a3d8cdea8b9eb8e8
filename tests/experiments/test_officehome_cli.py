"""In-process `fit`/`test` through the CLI on generated data, read back through MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from experiments.officehome import main
from tests.helpers.cli import tiny_demo_args


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory):
    """One short training of the SRM model, shared by the assertions below."""
    tmp_path = tmp_path_factory.mktemp("fit")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # MLflow's ./mlruns (artifacts) goes there
    try:
        cli = main(["fit", *tiny_demo_args(tmp_path)])
        cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
        cli.trainer.logger.finalize("success")
    finally:
        monkeypatch.undo()
    return cli, MlflowClient(uri), cli.trainer.logger.run_id


# Slow tier: the 10-epoch fit of `trained_run` (about a minute); the fast tier keeps
# Office-Home CLI fits here (leave-one-domain-out) and in tests/lightning_modules/test_cli.py.
@pytest.mark.slow
def test_fit_logs_every_domain_params_and_config_to_mlflow(trained_run) -> None:
    cli, client, run_id = trained_run
    run = client.get_run(run_id)
    metrics = run.data.metrics
    for domain in ("Art", "Clipart", "Product", "Real_World"):
        assert f"val/acc/{domain}" in metrics
        assert f"test/acc/{domain}" in metrics
    for key in ("train/loss_epoch", "train/acc", "val/loss", "val/acc_mean", "val/acc_worst"):
        assert key in metrics
    assert run.data.params["model.backbone"] == "resnet20"
    assert run.data.params["model.recalibration"] == "srm"
    assert run.data.params["data.images_per_class"] == "30"
    assert run.data.tags["mlflow.runName"] == "resnet20-srm-multi_domain"
    assert run.data.tags["dataset"] == "officehome"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "officehome"
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert "config.yaml" in artifacts
    config_text = Path(client.download_artifacts(run_id, "config.yaml")).read_text()
    assert "OfficeHomeDemoDataModule" in config_text and "recalibration: srm" in config_text
    # val/acc_mean is recorded once per epoch
    history = client.get_metric_history(run_id, "val/acc_mean")
    assert len(history) == cli.trainer.max_epochs


# Slow tier: the 10-epoch fit of `trained_run` (about a minute); the fast tier keeps
# Office-Home CLI fits here (leave-one-domain-out) and in tests/lightning_modules/test_cli.py.
@pytest.mark.slow
def test_training_learns_beyond_chance(trained_run) -> None:
    _cli, client, run_id = trained_run
    metrics = client.get_run(run_id).data.metrics
    chance = 1 / 4
    assert metrics["test/acc_mean"] > chance + 0.15, metrics
    # every domain learns something (24 test images per domain make single domains noisy,
    # so this is checked on validation's best epoch, over 10 epochs)
    for domain in ("Art", "Clipart", "Product", "Real_World"):
        history = [m.value for m in client.get_metric_history(run_id, f"val/acc/{domain}")]
        assert max(history) > chance, (domain, history)
    losses = [m.value for m in client.get_metric_history(run_id, "train/loss_epoch")]
    assert losses[-1] < losses[0] * 0.8, losses


# Slow tier: the 10-epoch fit of `trained_run` (about a minute); the fast tier keeps
# Office-Home CLI fits here (leave-one-domain-out) and in tests/lightning_modules/test_cli.py.
@pytest.mark.slow
def test_validate_from_checkpoint_reproduces_the_logged_accuracy(
    trained_run, tmp_path, mlflow_uri
) -> None:
    cli, _, _ = trained_run
    best = cli.trainer.checkpoint_callback.best_model_path
    validated = main(["validate", *tiny_demo_args(tmp_path), "--ckpt_path", best])
    logged = cli.trainer.checkpoint_callback.best_model_score.item()
    new_run = MlflowClient(mlflow_uri).get_run(validated.trainer.logger.run_id)
    assert new_run.data.tags["mlflow.runName"] == "resnet20-srm-multi_domain-validate"
    assert new_run.data.metrics["val/acc_mean"] == pytest.approx(logged, abs=1e-6)


def test_leave_one_domain_out_evaluates_the_held_out_domain(tmp_path, mlflow_uri) -> None:
    cli = main(
        ["fit", *tiny_demo_args(tmp_path, "--data.init_args.held_out_domains", "[Art]", epochs=1)]
    )
    assert list(cli.model.head.heads) == ["Clipart", "Product", "Real_World"]
    run = MlflowClient(mlflow_uri).get_run(cli.trainer.logger.run_id)
    metrics = run.data.metrics
    assert "val/acc/Art" in metrics and "val/acc_held_out_mean" in metrics
    assert metrics["val/acc_held_out_mean"] == metrics["val/acc/Art"]
    trained = [metrics[f"val/acc/{d}"] for d in ("Clipart", "Product", "Real_World")]
    # model selection uses the trained domains only
    assert metrics["val/acc_mean"] == pytest.approx(sum(trained) / 3)
    assert run.data.tags["protocol"] == "leave_out_Art"
    # the held-out domain's whole data was evaluated: 4 classes x 30 images
    assert cli.model.evaluation_results["val"]["Art"].sum().item() == 120
