"""`python -m experiments.sweep` under local Ray on tiny data: nesting and tags in MLflow, a
failing trial, and a sweep killed mid-way then run again (slow: real fits in subprocesses)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from experiments.sweeps.spec import load_spec

pytestmark = pytest.mark.slow


def write_sweep(tmp_path: Path, modules: list[str], epochs: int, name: str = "tiny") -> Path:
    spec = {
        "name": name,
        "entry": "officehome",
        "configs": ["configs/officehome/demo.yaml", "tests/configs/officehome_tiny.yaml"],
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "output_dir": str(tmp_path / "sweep"),
        "fixed": {
            "trainer.max_epochs": epochs,
            "data.init_args.cache_dir": str(tmp_path.parent / "sweep-demo-cache"),
            "data.init_args.style_shift": None,
            "evaluation_artifacts.confusion_matrices": False,
            "trainer.logger.init_args.log_model": False,
        },
        "grid": {"model.init_args.recalibration": modules},
        "seeds": 2,
        "resources": {"cpu": 1},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The command, from `cwd`: the new experiment's artifacts go to `<cwd>/mlruns`."""
    return subprocess.run(
        [sys.executable, "-m", "experiments.sweep", *args, "--num-cpus", "2"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )


def trial_runs(path: Path):
    spec = load_spec(path)
    client = MlflowClient(spec.tracking_uri)
    experiment = client.get_experiment_by_name(spec.experiment)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    return spec, client, parents, [r for r in runs if r.data.tags.get("sweep.role") == "trial"]


def test_sweep_runs_nested_trials_and_reports_a_failing_one(tmp_path):
    # `bogus` is not a module: its two trials fail; the four others must finish.
    path = write_sweep(tmp_path, ["none", "srm", "bogus"], epochs=1)
    result = sweep("run", str(path), "--progress-seconds", "3", cwd=tmp_path)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    # While the fits run: progress blocks with each running trial's epoch and validation
    # accuracy (read from its MLflow run), and the time left once a trial has finished.
    assert re.search(r"\] progress: \d/6 ended, \d running, \d waiting; ", result.stdout)
    trial_line = r"recalibration=(none|srm) seed=\d draw=0 \(\w{16}\): epoch 1/1, val/acc_mean "
    assert re.search(trial_line, result.stdout), result.stdout[-3000:]
    assert re.search(r"elapsed, about \d+ (s|min) left", result.stdout), result.stdout[-3000:]
    spec, client, parents, trials = trial_runs(path)
    (parent,) = parents
    assert len(trials) == 6
    by_state = Counter(r.data.tags["sweep.state"] for r in trials)
    assert by_state == {"done": 4, "failed": 2}
    for run in trials:
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        module = tags["setting.model.init_args.recalibration"]
        assert tags["sweep.module"] == module and tags["sweep.seed"] in ("0", "1")
        assert len(tags["sweep.trial_hash"]) == 16
        if module == "bogus":
            assert run.info.status == "FAILED"
            assert "bogus" in tags["sweep.error"]  # the CLI's error, kept on the run
        else:
            assert run.info.status == "FINISHED"
            assert run.data.params["model.recalibration"] == module
            assert "test/acc_mean" in run.data.metrics
    status = sweep("status", str(path), cwd=tmp_path)
    assert "4 done" in status.stdout and "2 failed" in status.stdout, status.stdout
    # The report is printed and logged on the parent run.
    assert "Paired against `none`" in result.stdout
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/accuracy.png", "report/learning_curves.png"} <= artifacts
    tags = client.get_run(parent.info.run_id).data.tags
    assert tags["best_checkpoint.training_domain_validation.srm"].endswith(".ckpt")
    experiment = client.get_experiment_by_name(spec.experiment)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert str(tmp_path) in experiment.artifact_location  # not in the project


def test_killed_sweep_finishes_on_the_second_run_without_duplicates(tmp_path):
    path = write_sweep(tmp_path, ["none", "srm"], epochs=3, name="killed")
    spec = load_spec(path)
    process = subprocess.Popen(
        [sys.executable, "-m", "experiments.sweep", "run", str(path), "--num-cpus", "2"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    checkpoints = spec.output_dir / "trials"
    try:
        # Kill the whole sweep (driver, Ray, trials) once a trial has its first checkpoint.
        while not list(checkpoints.glob("*/checkpoints/last.ckpt")):
            assert process.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
            time.sleep(1)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    time.sleep(3)  # the trial processes get SIGTERM as their Ray workers die
    interrupted = {p.parts[-3] for p in checkpoints.glob("*/checkpoints/last.ckpt")}

    result = sweep("run", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _, client, parents, trials = trial_runs(path)
    assert len(parents) == 1
    hashes = Counter(r.data.tags["sweep.trial_hash"] for r in trials)
    assert sorted(hashes) == sorted(t.hash for t in spec.trials())  # none missing
    assert set(hashes.values()) == {1}  # none duplicated
    assert all(r.info.status == "FINISHED" and r.data.tags["sweep.state"] == "done" for r in trials)
    for run in trials:
        if run.data.tags["sweep.trial_hash"] in interrupted:
            log = (checkpoints / run.data.tags["sweep.trial_hash"] / "trial.log").read_text()
            # Resumed from its checkpoint, into the same run.
            assert "--ckpt_path=last" in log and "Resuming MLflow run" in log
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/acc_mean")]
        assert len(steps) == 3 and steps == sorted(set(steps))
