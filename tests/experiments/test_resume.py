"""Kill -9 a training process mid-epoch, resume with `--ckpt_path last`: one MLflow run, whole,
on the trajectory of an uninterrupted run.

The training runs as `python -m experiments.officehome fit` in a subprocess, so the SIGKILL is
real: no Python cleanup, no `finally`, the MLflow run left RUNNING. The run's history is read as
the project reads it (`lightning_modules.tracking.metric_history`): MLflow keeps the killed
process's points past its checkpoint, and the resume marks them replaced.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from lightning_modules.tracking import RESUMES_TAG, metric_history
from tests.helpers.subprocess_fits import MAX_EPOCHS, environment, fit_command, logged_steps


def losses(client: MlflowClient, run_id: str) -> dict[int, float]:
    return {m.step: m.value for m in metric_history(client, run_id, "train/loss_step")}


def wait_for(condition, process: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"training ended (rc {process.returncode}) before the kill")
        if time.monotonic() > deadline:
            raise AssertionError("no checkpoint and metrics within the time limit")
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_then_resume_last_continues_the_same_mlflow_run(tmp_path: Path) -> None:
    env = environment(tmp_path)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    # The same fit, uninterrupted, beside it: the trajectory the resumed run must follow.
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    reference_env = environment(reference_dir)
    reference = subprocess.Popen(
        fit_command(),
        cwd=reference_dir,
        env=reference_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(fit_command(), cwd=tmp_path, env=env, stdout=log, stderr=log)

    def metrics_logged_after_a_checkpoint() -> bool:
        # Kill only once the process has logged steps its checkpoint does not cover, so the
        # resumed run must log those steps again: the case that could duplicate steps.
        found = list(tmp_path.glob("outputs/*/*/checkpoints/last.ckpt"))
        if not found:
            return False
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        if not runs or "train/loss_step" not in runs[0].data.metrics:
            return False
        history = client.get_metric_history(runs[0].info.run_id, "train/loss_step")
        logged = max(m.step for m in history)
        # The process is stopped while its checkpoint is read, so that it cannot write a newer
        # one between this check and the kill (the store is read before: the stopped process
        # might hold its lock).
        os.kill(first.pid, signal.SIGSTOP)
        try:
            step = torch.load(found[0], map_location="cpu", weights_only=True)["global_step"]
        except Exception:  # being written right now
            step = None
        if step is not None and logged >= step:
            return True  # left stopped: the kill comes next
        os.kill(first.pid, signal.SIGCONT)
        return False

    try:
        wait_for(metrics_logged_after_a_checkpoint, first)
        os.kill(first.pid, signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
        if reference.poll() is None and first.returncode != -signal.SIGKILL:
            reference.kill()

    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    killed_run_id = run.info.run_id
    assert run.info.status == "RUNNING"  # SIGKILL leaves no chance to say otherwise
    before = logged_steps(client, killed_run_id)
    (last,) = tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")
    checkpoint_step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    # Steps the killed process logged after its checkpoint: the resumed one logs them again.
    print(f"killed at train step {max(before['train/loss_step'])}, checkpoint {checkpoint_step}")
    assert max(before["train/loss_step"]) >= checkpoint_step

    resumed = subprocess.run(
        fit_command("--ckpt_path=last"),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming MLflow run {killed_run_id}" in resumed.stdout

    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_id for r in runs] == [killed_run_id]  # no second run
    assert runs[0].info.status == "FINISHED"
    after = logged_steps(client, killed_run_id)
    for key, steps in after.items():
        if key == "epoch":
            continue  # Lightning logs `epoch` with every call, twice per step at epoch ends
        assert steps == sorted(set(steps)), f"{key}: steps not unique and increasing: {steps}"
        assert steps[: len(before.get(key, []))] == before.get(key, [])  # history kept
    # One training loss per optimizer step, without holes across the kill.
    train_steps = after["train/loss_step"]
    assert train_steps == list(range(train_steps[0], train_steps[-1] + 1))
    assert len(after["val/acc_mean"]) == MAX_EPOCHS
    assert len(before["train/loss_step"]) < len(train_steps)
    # The killed process's points past the checkpoint are in MLflow, marked as replaced.
    raw = [m.step for m in client.get_metric_history(killed_run_id, "train/loss_step")]
    assert len(raw) > len(train_steps)
    assert f'"step": {checkpoint_step}' in runs[0].data.tags[RESUMES_TAG]
    # Exact resume: every step's loss is the uninterrupted run's (before: all differed after
    # the resume, from a reshuffled epoch and other augmentations).
    assert reference.wait(timeout=600) == 0
    reference_client = MlflowClient(reference_env["MLFLOW_TRACKING_URI"])
    (reference_run,) = reference_client.search_runs(
        [e.experiment_id for e in reference_client.search_experiments()]
    )
    assert losses(client, killed_run_id) == losses(reference_client, reference_run.info.run_id)
