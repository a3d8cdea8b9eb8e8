"""Run-side faults with real processes: parallel starts on a new store, SIGTERM then resume,
`--ckpt_path last` never reopening a finished run or another config's, and the clean error of
a real `python -m` command (with and without STYLEBENCH_DEBUG)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from pytorch_lightning import Callback

from lightning_modules.tracking import REPLACED_BY_TAG
from tests.helpers.subprocess_fits import MAX_EPOCHS, environment, fit_command, logged_steps

pytestmark = pytest.mark.slow


def all_runs(client: MlflowClient):
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def short(command: list[str], *extra: str) -> list[str]:
    """One short epoch: `fit_command`'s data, fewer images."""
    return [
        *command,
        "--data.init_args.images_per_class=8",
        "--trainer.max_epochs=1",
        *extra,
    ]


def test_four_processes_starting_at_once_on_a_new_store_all_finish(tmp_path: Path) -> None:
    env = environment(tmp_path)
    validate = [sys.executable, "-m", "experiments.officehome", "validate", *fit_command()[4:]]
    validate = [arg for arg in validate if not arg.startswith("--checkpoint.every")]
    commands = [
        short(fit_command(), "--model.init_args.recalibration=none"),
        short(fit_command(), "--model.init_args.recalibration=srm"),
        short(validate, "--model.init_args.recalibration=none"),
        short(validate, "--model.init_args.recalibration=se"),
    ]
    processes = [
        subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for command in commands
    ]
    outputs = [process.communicate(timeout=900) for process in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err.decode()[-3000:]
    runs = all_runs(MlflowClient(env["MLFLOW_TRACKING_URI"]))
    assert len(runs) == 4
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert all("val/acc_mean" in run.data.metrics for run in runs)
    # The experiment opens on its runs in MLflow 3's UI.
    (experiment,) = [
        e
        for e in MlflowClient(env["MLFLOW_TRACKING_URI"]).search_experiments()
        if e.name == "officehome"
    ]
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def wait_for_steps_after_a_checkpoint(tmp_path: Path, client: MlflowClient, process) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"training ended (rc {process.returncode}) before the signal")
        found = list(tmp_path.glob("outputs/*/*/checkpoints/last.ckpt"))
        runs = all_runs(client) if found else []
        if runs and "train/loss_step" in runs[0].data.metrics:
            history = client.get_metric_history(runs[0].info.run_id, "train/loss_step")
            try:
                step = torch.load(found[0], map_location="cpu", weights_only=True)["global_step"]
            except Exception:  # being written
                step = None
            if step is not None and max(m.step for m in history) >= step + 2:
                return
        time.sleep(0.1)
    raise AssertionError("no checkpoint and later steps within the time limit")


class SlowTrainingSteps(Callback):
    """Makes each training step last at least `seconds`: the signal a test sends once it has
    seen steps in the store then lands in training, not in the epoch's validation (where
    the checkpoint written before stays)."""

    def __init__(self, seconds: float = 0.2) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)


HERE = "tests.experiments.test_run_faults"  # how the fit subprocess imports this module
SLOW_STEPS = f"--trainer.callbacks+={{class_path: {HERE}.SlowTrainingSteps}}"


def test_sigterm_mid_epoch_ends_killed_and_resume_finishes_the_same_run(tmp_path: Path) -> None:
    env = environment(tmp_path)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    # No step cadence: only the signal writes a mid-epoch last.ckpt.
    command = [a for a in fit_command(SLOW_STEPS) if not a.startswith("--checkpoint.every")]
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=log)
        try:
            wait_for_steps_after_a_checkpoint(tmp_path, client, first)
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=120) == 128 + signal.SIGTERM
        finally:
            if first.poll() is None:
                first.kill()
    text = (tmp_path / "first.log").read_text()
    assert "error: stopped by SIGTERM; resume with the same command and --ckpt_path last" in text
    assert "Traceback" not in text
    (run,) = all_runs(client)
    assert run.info.status == "KILLED"
    before = logged_steps(client, run.info.run_id)
    (last,) = tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")
    # Written at the stop, at the step the process had reached, not at the last validation.
    stopped_at = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert stopped_at == max(before["train/loss_step"]) + 1

    resumed = subprocess.run(
        [*command, "--ckpt_path=last"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming MLflow run {run.info.run_id}" in resumed.stdout
    (after_run,) = all_runs(client)
    assert after_run.info.status == "FINISHED"
    after = logged_steps(client, run.info.run_id)
    train_steps = after["train/loss_step"]
    assert train_steps == list(range(train_steps[-1] + 1))  # every step once, none lost
    assert len(after["val/acc_mean"]) == MAX_EPOCHS
    assert len(after["train/loss_epoch"]) == MAX_EPOCHS


def test_ckpt_path_last_never_reopens_a_finished_run_or_another_config(tmp_path: Path) -> None:
    env = environment(tmp_path)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    run_a = short(fit_command(), "--model.init_args.optimizer.init_args.lr=0.003")
    finished = subprocess.run(run_a, cwd=tmp_path, env=env, capture_output=True, timeout=600)
    assert finished.returncode == 0, finished.stderr.decode()[-3000:]
    (a,) = all_runs(client)
    a_history = logged_steps(client, a.info.run_id)

    # Run B, another lr, killed before its first checkpoint: a RUNNING run without one, whose
    # fit had taken its writer lock (so the run is known to be this project's, its writer dead).
    run_b = short(fit_command(), "--model.init_args.optimizer.init_args.lr=0.006")
    b = subprocess.Popen(
        run_b, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert b.poll() is None, "run B ended before it was killed"
            others = [r for r in all_runs(client) if r.info.run_id != a.info.run_id]
            if others and list(tmp_path.glob(f"outputs/*/{others[0].info.run_id}/*/writer.lock")):
                break
            time.sleep(0.1)
        b.kill()
        b.wait(timeout=30)
    finally:
        if b.poll() is None:
            b.kill()
    b_run = next(r for r in all_runs(client) if r.info.run_id != a.info.run_id)

    for command in (run_b, run_a):
        resumed = subprocess.run(
            [*command, "--ckpt_path=last"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "Resuming MLflow run" not in resumed.stdout
        assert f"not resuming run {a.info.run_id}" in resumed.stdout
        assert "starting a new run" in resumed.stdout
    assert logged_steps(client, a.info.run_id) == a_history  # A is untouched
    assert client.get_run(a.info.run_id).info.status == "FINISHED"
    # B's writer is dead: the new run of B's config replaces it (before: left RUNNING forever).
    b_after = client.get_run(b_run.info.run_id)
    assert b_after.info.status == "KILLED"
    new_b = b_after.data.tags[REPLACED_BY_TAG]
    assert client.get_run(new_b).data.tags["config_hash"] == b_after.data.tags["config_hash"]
    assert len(all_runs(client)) == 4  # A, killed B, and two new runs


def test_a_real_command_prints_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    env = environment(tmp_path)
    command = short(fit_command(), "--model.init_args.recalibration=sre")
    plain = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert plain.returncode == 1
    assert "error: Unknown recalibration module 'sre'; valid choices:" in plain.stderr
    assert "Traceback" not in plain.stderr
    assert "Does not validate against any of the Union subtypes" not in plain.stderr
    debug = subprocess.run(
        command,
        cwd=tmp_path,
        env={**env, "STYLEBENCH_DEBUG": "1"},
        capture_output=True,
        text=True,
    )
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    repair = subprocess.run(
        [sys.executable, "-m", "experiments.repair_store", "http://127.0.0.1:5000"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert repair.returncode == 1
    assert repair.stderr.splitlines()[0] == (
        "error: http://127.0.0.1:5000 is not an existing SQLite MLflow store"
    )
