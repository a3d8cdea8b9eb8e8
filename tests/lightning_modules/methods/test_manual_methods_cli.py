"""MLDG, Fish, DANN-DG, CDANN, SagNet and ARM end to end through the CLI on the tiny demo: the
configured optimizer and cosine schedule, checkpoints, the logged metrics, and
`trainer.max_steps` counting batches."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from experiments.officehome import main
from tests.helpers.cli import tiny_args

CASES = {
    "mldg": ("{n_meta_test: 1}", "train/loss_epoch"),
    "fish": ("{}", "train/loss_epoch"),
    "dann_dg": ("{mlp_width: 16}", "train/disc_loss_epoch"),
    "cdann": ("{mlp_width: 16, d_steps_per_g_step: 2}", "train/grad_penalty_epoch"),
    "sagnet": ("{}", "train/adversarial_loss_epoch"),
    "arm": ("{}", "train/loss_epoch"),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(CASES))
def test_a_method_trains_through_the_cli_for_max_steps_batches(
    tmp_path, mlflow_uri, method: str
) -> None:
    options, metric = CASES[method]
    cli = main(
        [
            "fit",
            *tiny_args(
                tmp_path,
                "--model.init_args.method",
                method,
                "--model.init_args.method_kwargs",
                options,
                "--trainer.max_steps",
                "3",
                "--data.init_args.domain_proportions",
                "{Art: 1, Product: 1}",
            ),
        ]
    )
    assert cli.trainer.global_step == 3
    assert cli.trainer.fit_loop.epoch_loop.batch_progress.total.completed == 3
    metrics = MlflowClient(mlflow_uri).get_run(cli.trainer.logger.run_id).data.metrics
    assert metric in metrics and "val/acc_mean" in metrics
