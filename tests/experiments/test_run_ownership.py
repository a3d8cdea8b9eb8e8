"""Stopping and resuming with real processes: Ctrl-C to a terminal's whole process group with
DataLoader workers, a second `--ckpt_path last` while the first fit still runs, and a
truncated `last.ckpt` on resume."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from lightning_modules.tracking import REPLACED_BY_TAG, metric_history
from tests.helpers.subprocess_fits import environment, fit_command

pytestmark = pytest.mark.slow


def all_runs(client: MlflowClient):
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def raw_steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def wait_until(condition, process: subprocess.Popen, timeout: float = 400.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"training ended (rc {process.returncode}) too early")
        if time.monotonic() > deadline:
            raise AssertionError("the condition was not met in time")
        time.sleep(0.1)


def steps_logged(client: MlflowClient, at_least: int):
    def logged() -> bool:
        runs = all_runs(client)
        if not runs or "train/loss_step" not in runs[0].data.metrics:
            return False
        return len(client.get_metric_history(runs[0].info.run_id, "train/loss_step")) >= at_least

    return logged


def checkpoint_step(path: Path) -> int | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["global_step"]
    except Exception:  # missing, or being written
        return None


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_ctrl_c_to_the_process_group_ends_killed_with_a_stop_checkpoint(
    tmp_path: Path, workers: int
) -> None:
    # Before: with workers, the forked workers ran the project's SIGINT handler and died by
    # SIGTERM: `DataLoader worker (pid N) is killed by signal: Terminated`, exit 1, the run
    # FAILED (or left RUNNING), no stop checkpoint.
    env = environment(tmp_path)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    command = [
        *(a for a in fit_command() if not a.startswith("--checkpoint.every")),
        f"--data.init_args.num_workers={workers}",
    ]
    log_path = tmp_path / "fit.log"
    with log_path.open("w") as log:
        # A session of its own: the group a terminal's Ctrl-C reaches is the fit and its workers.
        fit = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=log, stderr=log, start_new_session=True
        )
        try:
            wait_until(steps_logged(client, 3), fit)
            os.killpg(fit.pid, signal.SIGINT)
            assert fit.wait(timeout=300) == 128 + signal.SIGINT
        finally:
            if fit.poll() is None:
                os.killpg(fit.pid, signal.SIGKILL)
    text = log_path.read_text()
    assert "error: stopped by SIGINT; resume with the same command and --ckpt_path last" in text
    for wrong in ("killed by signal", "unreachable", "Traceback", "weights_only"):
        assert wrong not in text, text[-3000:]
    (run,) = all_runs(client)
    assert run.info.status == "KILLED"
    (last,) = tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")
    logged = raw_steps(client, run.info.run_id, "train/loss_step")
    assert checkpoint_step(last) == logged[-1] + 1  # written at the stop, not before


def test_a_second_ckpt_path_last_is_refused_while_the_first_fit_runs(tmp_path: Path) -> None:
    # Before: the second command resumed the live run ("is RUNNING with this config"), and
    # both wrote into one run and one checkpoint folder.
    env = environment(tmp_path)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    # Long enough to outlast the second command's start; stopped once it has been refused.
    command = [*fit_command(), "--trainer.max_epochs=40"]
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=log)
        try:
            wait_until(lambda: list(tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")), first)
            second = subprocess.run(
                [*command, "--ckpt_path=last"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert first.poll() is None, "the first fit ended before the second was refused"
            wait_until(steps_logged(client, 30), first)  # it goes on writing its run alone
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=300) == 128 + signal.SIGTERM
        finally:
            if first.poll() is None:
                first.kill()
    assert second.returncode == 1
    (run,) = all_runs(client)  # no second run
    line = second.stderr.strip().splitlines()[-2]
    assert line.startswith(f"error: --ckpt_path last: run {run.info.run_id} is being trained by ")
    assert f"process {first.pid} on " in line and f"kill {first.pid}" in line
    assert "Resuming MLflow run" not in second.stdout
    assert run.info.status == "KILLED"  # the first fit's own end
    steps = raw_steps(client, run.info.run_id, "train/loss_step")
    assert steps == list(range(len(steps)))  # every step once: one writer
    assert len(list(tmp_path.glob("outputs/*/*/checkpoints/best-*.ckpt"))) == 1


def test_a_truncated_last_ckpt_falls_back_to_the_best_beside_it(tmp_path: Path) -> None:
    # Before: `PytorchStreamReader failed reading zip archive`, naming no file, every resume.
    env = environment(tmp_path)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    command = [a for a in fit_command() if not a.startswith("--checkpoint.every")]
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=log)
        try:
            wait_until(lambda: list(tmp_path.glob("outputs/*/*/checkpoints/best-*.ckpt")), first)
            wait_until(steps_logged(client, 14), first)  # into the second epoch
            first.kill()  # SIGKILL: the run is left RUNNING
            first.wait()
        finally:
            if first.poll() is None:
                first.kill()
    (best,) = tmp_path.glob("outputs/*/*/checkpoints/best-*.ckpt")
    last = best.parent / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    resumed = subprocess.run(
        [*command, "--ckpt_path=last"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (moved,) = best.parent.glob("last.ckpt.unreadable-*")
    notes = [line for line in resumed.stdout.splitlines() if line.startswith("--ckpt_path last")]
    assert any("cannot read checkpoint" in n and "last.ckpt (" in n for n in notes), notes
    assert any("moved it to" in n and n.endswith(moved.name) for n in notes), notes
    assert any(
        n.endswith(f"{best.name}, the newest checkpoint of") or best.name in n for n in notes
    )
    (run,) = all_runs(client)
    assert f"Resuming MLflow run {run.info.run_id} from" in resumed.stdout
    assert run.info.status == "FINISHED"
    assert REPLACED_BY_TAG not in run.data.tags
    history = [m.step for m in metric_history(client, run.info.run_id, "train/loss_step")]
    assert history == list(range(len(history)))
