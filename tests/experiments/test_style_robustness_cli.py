"""The demo config's style metrics reach MLflow for the plain and the SRM model, on cadence."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from experiments.officehome import main
from tests.helpers.cli import tiny_demo_args

DOMAINS = ("Art", "Clipart", "Product", "Real_World")


# The SRM fit is in the slow tier: the plain one runs the same CLI path (about 10 s each).
@pytest.mark.parametrize("module", ["none", pytest.param("srm", marks=pytest.mark.slow)])
def test_plain_and_srm_runs_carry_the_style_metrics(tmp_path, mlflow_uri, module) -> None:
    # 3 epochs, style every 2: evaluated after epochs 2 and 3 (the last), skipped after 1.
    cli = main(
        [
            "fit",
            *tiny_demo_args(tmp_path, "--model.init_args.recalibration", module, epochs=3),
            "--data.init_args.images_per_class",
            "10",
        ]
    )
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
    cli.trainer.logger.finalize("success")
    client = MlflowClient(mlflow_uri)
    run_id = cli.trainer.logger.run_id
    metrics = client.get_run(run_id).data.metrics
    for stage in ("val", "test"):
        for domain in DOMAINS:
            assert f"{stage}/style_acc/{domain}" in metrics
        assert f"{stage}/style_acc_mean" in metrics and f"{stage}/style_robustness" in metrics
        # existing names unchanged by the second loader (no /dataloader_idx_ suffix)
        assert f"{stage}/acc_mean" in metrics and f"{stage}/loss" in metrics
    assert not [key for key in metrics if "dataloader_idx" in key]
    assert metrics["test/style_robustness"] == pytest.approx(
        metrics["test/style_acc_mean"] / metrics["test/acc_mean"]
    )
    assert len(client.get_metric_history(run_id, "val/acc_mean")) == 3
    assert len(client.get_metric_history(run_id, "val/style_acc_mean")) == 2
    artifacts = {a.path for a in client.list_artifacts(run_id, "style_robustness")}
    assert {
        "style_robustness/test_cross_domain.png",
        "style_robustness/test_cross_domain.json",
        "style_robustness/val_cross_domain_epoch001.png",
        "style_robustness/val_cross_domain_epoch002.png",
    } <= artifacts
