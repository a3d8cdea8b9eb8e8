"""The step a validation is logged at and the step stored in its checkpoint, on real fits: what
`TrialRecord.checkpoint_at` relies on to find the kept checkpoint of a selected validation
(slow: two tiny fits through the CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from experiments.officehome import main
from experiments.sweeps.runs import metric_history, validation_epochs
from experiments.sweeps.selection import TrialRecord
from tests.helpers.cli import tiny_demo_args

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "validation",
    [
        # Epoch-based: one validation at the end of each epoch.
        ["--trainer.max_epochs", "2"],
        # Step-based, as DomainBed (every 300 steps across epochs): every 3 steps, so an
        # epoch of the tiny data (7 batches) holds two validations.
        [
            *("--trainer.max_epochs", "-1", "--trainer.max_steps", "13"),
            *("--trainer.val_check_interval", "3", "--trainer.check_val_every_n_epoch", "null"),
        ],
    ],
    ids=["epochs", "steps"],
)
def test_every_validation_finds_its_own_checkpoint(tmp_path: Path, monkeypatch, validation):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # MLflow's ./mlruns (artifacts) goes there
    folder = tmp_path / "checkpoints"
    arguments = tiny_demo_args(
        tmp_path,
        # Every validation keeps its checkpoint, under the CLI's default name
        # (best-epoch{epoch:03d}: two in one epoch get Lightning's -v1).
        *("--checkpoint.save_top_k", "-1", "--checkpoint.dirpath", str(folder)),
        *("--model.init_args.lr_scheduler", "null", "--data.init_args.style_shift", "null"),
        *("--evaluation_artifacts.confusion_matrices", "false"),
        *("--trainer.logger.init_args.log_model", "false"),
        epochs=2,
    )
    cli = main(["fit", *arguments, *validation])
    cli.trainer.logger.finalize("success")
    client = MlflowClient(uri)
    run = client.get_run(cli.trainer.logger.run_id)
    history = {"val/acc_mean": metric_history(client, run, "val/acc_mean")}
    steps = sorted(history["val/acc_mean"])
    record = TrialRecord(
        "h",
        "srm",
        (),
        0,
        0,
        run.info.run_id,
        history,
        checkpoint_dir=str(folder),
        validation_epochs=validation_epochs(client, run, steps),
    )
    epochs = [record.epoch_at(step) for step in steps]
    if "--trainer.val_check_interval" in validation:
        assert len(set(epochs)) < len(epochs), epochs  # an epoch with two validations
    else:
        assert epochs == [0, 1]
    found = [record.checkpoint_at(step) for step in steps]
    assert all(found) and len(set(found)) == len(found), (steps, found)
    for step, path in zip(steps, found, strict=True):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        # The checkpoint of the validation logged at `step` holds that validation's score.
        states = checkpoint["callbacks"]
        scores = [
            float(state["current_score"])
            for name, state in states.items()
            if name.startswith("ModelCheckpoint") and state["current_score"] is not None
        ]
        assert scores == [pytest.approx(history["val/acc_mean"][step])], (step, path, scores)
