"""One clean line per problem at the command line (`experiments.errors.run_main`), checked
before any MLflow run exists, and no poisoned checkpoint after a divergence.

In-process: `run_main` is what every `python -m experiments.<tool>` ends in; the subprocess
variant (and `STYLEBENCH_DEBUG=1`) is in tests/experiments/test_run_faults.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from pytorch_lightning import Callback

from experiments.errors import run_main
from experiments.officehome import main
from tests.helpers.cli import tiny_demo_args

HERE = "tests.experiments.test_cli_errors"
HINT = "set STYLEBENCH_DEBUG=1 for the full traceback)"

CASES = [
    (
        ["--model.init_args.recalibration", "sre"],
        1,
        "error: Unknown recalibration module 'sre'; valid choices: none, se, srm, ge_minus, ge, "
        "ge_plus, mssar. New modules are registered in "
        "lightning_modules/models/recalibration/__init__.py.",
    ),
    (
        ["--data.init_args.val_fraction", "1.5"],
        1,
        "error: val_fraction=1.5 and test_fraction=0.2 must be in [0, 1) and leave images for "
        "training (their sum must be below 1)",
    ),
    (
        ["--model.init_args.weights", "/nonexistent/resnet.pth"],
        1,
        "error: Weights file /nonexistent/resnet.pth does not exist "
        "(weights='/nonexistent/resnet.pth').",
    ),
    (
        ["--model.init_args.optimizer.init_args.lr", "-0.1"],
        1,
        "error: model.init_args.optimizer (ValueError from the optimizer): Invalid learning "
        "rate: -0.1; fix model.init_args.optimizer.init_args",
    ),
    (
        ["--data.init_args.batch_size", "0"],
        1,
        "error: data.init_args.batch_size is 0; it must be a positive whole number",
    ),
    # jsonargparse's own messages for configuration errors, with its exit code 2.
    (["--nope", "3"], 2, "error: unrecognized arguments: --nope 3"),
]


def run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as stopped:
        run_main(lambda: main(args))
    return stopped.value.code


@pytest.mark.parametrize(("override", "code", "line"), CASES, ids=lambda v: str(v)[:40])
def test_bad_setting_gives_one_line_its_exit_code_and_no_run(
    tmp_path: Path,
    mlflow_uri: str,
    capsys: pytest.CaptureFixture[str],
    override: list[str],
    code: int,
    line: str,
) -> None:
    assert run(["fit", *tiny_demo_args(tmp_path, *override, epochs=1)]) == code
    err = capsys.readouterr().err
    assert line in err.splitlines(), err[-3000:]
    assert "Traceback" not in err
    if code == 1:
        assert err.splitlines()[-1].endswith(HINT)
    client = MlflowClient(mlflow_uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_missing_data_root_is_named_with_the_fix(
    tmp_path: Path, mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = tiny_demo_args(
        tmp_path,
        "--data",
        "datamodules.officehome.OfficeHomeDataModule",
        "--data.init_args.root",
        str(tmp_path / "missing"),
        epochs=1,
    )
    assert run(["fit", *args]) == 1
    err = capsys.readouterr().err
    (line,) = [text for text in err.splitlines() if text.startswith("error: ")]
    assert line.startswith(f"error: Office-Home root {tmp_path / 'missing'} does not exist.")
    assert "--data.init_args.root" in line
    assert "Traceback" not in err


def test_debug_switch_raises_the_original_error(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STYLEBENCH_DEBUG", "1")
    with pytest.raises(ValueError, match="Unknown recalibration module 'sre'"):
        run_main(
            lambda: main(
                ["fit", *tiny_demo_args(tmp_path, "--model.init_args.recalibration=sre", epochs=1)]
            )
        )


class PoisonRunningVariance(Callback):
    """Makes a BatchNorm running variance NaN after the last training batch of epoch
    `epoch`, as a divergence does: the training loss (batch statistics) stays finite, the
    validation loss (running statistics) does not."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == trainer.num_training_batches - 1:
            norm = next(m for m in pl_module.modules() if isinstance(m, torch.nn.BatchNorm2d))
            norm.running_var.fill_(float("nan"))


def checkpoints(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "outputs").rglob("*.ckpt"))


def poison_args(tmp_path: Path, *extra: str) -> list[str]:
    callback = {"class_path": f"{HERE}.PoisonRunningVariance", "init_args": {"epoch": 1}}
    return [
        "fit",
        *tiny_demo_args(tmp_path, *extra, epochs=3),
        "--data.init_args.images_per_class=10",
        f"--trainer.callbacks+={callback}",
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], r"error: val/loss is (nan|inf) at epoch 1 \(global step \d+\): training diverged"),
        (
            ["--checkpoint.every_n_train_steps=1"],
            r"error: 1 of \d+ tensors of the model state are not finite at global step \d+ "
            r"\(e\.g\. backbone\.[\w.]*running_var\)",
        ),
    ],
    ids=["at-validation", "at-a-step-checkpoint"],
)
def test_divergence_stops_the_run_and_no_checkpoint_is_poisoned(
    tmp_path: Path,
    mlflow_uri: str,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    assert run(poison_args(tmp_path, *extra)) == 1
    err = capsys.readouterr().err
    assert any(re.match(message, line) for line in err.splitlines()), err
    assert "the checkpoints written before are kept (newest: " in err
    assert checkpoints(tmp_path), "the epoch-0 checkpoints are kept"
    for path in checkpoints(tmp_path):
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())
    client = MlflowClient(mlflow_uri)
    (failed,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert failed.info.status == "FAILED"
