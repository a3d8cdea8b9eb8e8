"""Faults in training: exceptions, Ctrl-C, NaN loss, config mistakes; end to end, in process.

Each run must end with a clear message, an MLflow status other than RUNNING, and its last
checkpoint (written before the fault) kept on disk.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from pytorch_lightning import Callback

from datamodules.demo import ensure_officehome_demo
from experiments.officehome import main
from lightning_modules.tracking import RUN_ID_KEY
from tests.helpers.cli import tiny_demo_args

HERE = "tests.lightning_modules.test_faults"


class RaiseMidEpoch(Callback):
    """Raises after batch `batch` of epoch `epoch`: a crash, or Ctrl-C (`keyboard_interrupt`).

    The best checkpoint needs the monitored `val/acc_mean` of a first validation, so most
    faults are raised in the second epoch, when both the best and `last.ckpt` exist.
    """

    def __init__(self, batch: int = 2, keyboard_interrupt: bool = False, epoch: int = 1) -> None:
        self.batch, self.keyboard_interrupt, self.epoch = batch, keyboard_interrupt, epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise KeyboardInterrupt if self.keyboard_interrupt else RuntimeError("disk on fire")


class PoisonWeightsInSecondEpoch(Callback):
    """Turns a weight into NaN after batch `batch` of the second epoch: the next loss is NaN."""

    def __init__(self, batch: int = 2) -> None:
        self.batch = batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == 1 and batch_idx == self.batch:
            with torch.no_grad():
                next(pl_module.backbone.parameters()).fill_(float("nan"))


def fault_args(tmp_path: Path, callback: str, **init_args) -> list[str]:
    """Two short epochs with a checkpoint every 2 optimizer steps, and a fault callback."""
    callback_config = {"class_path": f"{HERE}.{callback}", "init_args": init_args}
    return [
        "fit",
        *tiny_demo_args(tmp_path, epochs=2),
        "--data.init_args.images_per_class=10",
        "--checkpoint.every_n_train_steps=2",
        f"--trainer.callbacks+={callback_config}",
    ]


def only_run(uri: str):
    client = MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return run


def last_checkpoint(tmp_path: Path, run_id: str) -> dict:
    found = list((tmp_path / "outputs").glob(f"*/{run_id}/checkpoints/last.ckpt"))
    assert len(found) == 1, sorted(str(p) for p in tmp_path.rglob("*.ckpt"))
    (path,) = found
    return torch.load(path, map_location="cpu", weights_only=True)


def test_exception_marks_the_run_failed_and_keeps_the_last_checkpoint(
    tmp_path: Path, mlflow_uri: str
) -> None:
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(fault_args(tmp_path, "RaiseMidEpoch", batch=2))
    run = only_run(mlflow_uri)
    assert run.info.status == "FAILED"
    checkpoint = last_checkpoint(tmp_path, run.info.run_id)
    # Written mid-way through the second epoch, before the crash (after batch 0 or 1: every
    # second optimizer step, counted from the start).
    assert checkpoint["epoch"] == 1
    assert checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"] < 3
    assert checkpoint[RUN_ID_KEY] == run.info.run_id


def test_crash_in_the_first_epoch_keeps_the_latest_step_checkpoint(
    tmp_path: Path, mlflow_uri: str
) -> None:
    # No validation has run: no best checkpoint yet, but `last.ckpt` follows the step cadence.
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(fault_args(tmp_path, "RaiseMidEpoch", batch=4, epoch=0))
    run = only_run(mlflow_uri)
    checkpoint = last_checkpoint(tmp_path, run.info.run_id)
    assert (checkpoint["epoch"], checkpoint["global_step"]) == (0, 4)
    assert checkpoint[RUN_ID_KEY] == run.info.run_id
    assert not list((tmp_path / "outputs").rglob("best-*.ckpt"))


def test_ctrl_c_marks_the_run_killed(tmp_path: Path, mlflow_uri: str) -> None:
    handler = signal.getsignal(signal.SIGINT)
    try:
        # Lightning shuts down gracefully on KeyboardInterrupt, then exits with status 1.
        with pytest.raises(SystemExit):
            main(fault_args(tmp_path, "RaiseMidEpoch", batch=2, keyboard_interrupt=True))
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C from then on
    run = only_run(mlflow_uri)
    assert run.info.status == "KILLED"
    assert last_checkpoint(tmp_path, run.info.run_id)["epoch"] == 1


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, mlflow_uri: str
) -> None:
    pattern = r"training loss is nan at global step (\d+) \(epoch 1, batch 3\)"
    with pytest.raises(FloatingPointError, match=pattern) as raised:
        main(fault_args(tmp_path, "PoisonWeightsInSecondEpoch", batch=2))
    nan_step = int(re.search(pattern, str(raised.value)).group(1))
    run = only_run(mlflow_uri)
    assert run.info.status == "FAILED"
    checkpoint = last_checkpoint(tmp_path, run.info.run_id)
    assert checkpoint["global_step"] < nan_step
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())


@pytest.mark.parametrize(
    ("override", "error"),
    [
        (
            "--model.init_args.backbone=resnet51",
            r"Unknown backbone 'resnet51'; valid names: .*resnet50",
        ),
        (
            "--model.init_args.recalibration=cbam",
            r"Unknown recalibration module 'cbam'; valid choices: .*srm",
        ),
        (
            "--data.init_args.held_out_domains=[Sketch]",
            r"unknown domain 'Sketch'; valid choices: \['Art', 'Clipart', 'Product', 'Real ",
        ),
        ("--data.init_args.image_size=8", r"image_size=8 is too small; use at least 16 pixels"),
        ("--data.init_args.on_bad_image=ignore", r"valid choices: \['error', 'skip'\]"),
    ],
)
def test_config_mistakes_give_one_line_with_the_valid_choices(
    tmp_path: Path, mlflow_uri: str, override: str, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        main(["fit", *tiny_demo_args(tmp_path, override, epochs=1)])


def test_non_positive_learning_rate_fails_before_training(tmp_path: Path, mlflow_uri: str) -> None:
    with pytest.raises(ValueError, match=r"learning rate .* is 0.0; model.optimizer.init_args.lr"):
        main(
            [
                "fit",
                *tiny_demo_args(tmp_path, "--model.init_args.optimizer.init_args.lr=0", epochs=1),
            ]
        )
    # Checked before the MLflow run is created: no FAILED run is left behind.
    client = MlflowClient(mlflow_uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_skip_policy_logs_bad_image_count_and_list_to_mlflow(
    tmp_path: Path, mlflow_uri: str
) -> None:
    cache = tmp_path / "cache"
    root = ensure_officehome_demo(
        str(cache), num_classes=4, images_per_class=10, image_size=48, seed=0
    )
    broken = sorted(Path(root).glob("Clipart/*/*.*"))[:2]
    broken[0].write_bytes(b"")
    broken[1].write_bytes(broken[1].read_bytes()[:50])
    cli = main(
        [
            "fit",
            *tiny_demo_args(tmp_path, epochs=1),
            "--data.init_args.images_per_class=10",
            f"--data.init_args.cache_dir={cache}",
            "--data.init_args.on_bad_image=skip",
        ]
    )
    client = MlflowClient(mlflow_uri)
    run_id = cli.trainer.logger.run_id
    assert client.get_run(run_id).data.metrics["data/bad_images"] >= 1
    listed = Path(client.download_artifacts(run_id, "bad_images.txt")).read_text().split("\n")
    assert set(filter(None, listed)) <= {str(p) for p in broken}
