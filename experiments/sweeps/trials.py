"""A sweep trial as a Ray Tune function trainable: one fit + test of this project, in a process
of its own, logged as an MLflow run nested under the sweep's parent run.

Each trial owns a folder `<output_dir>/trials/<hash>/` (checkpoints, `trial.log`) and one MLflow
run found by its tags (`sweep`, `sweep.trial_hash`), never by name or recency, so a second
`sweep run` continues exactly the trials the first left unfinished:

- no run yet: one is created (tags: `mlflow.parentRunId`, the trial's settings and hash), and
  the fit logs into it (`--trainer.logger.init_args.run_id`);
- a run and `<trial>/checkpoints/last.ckpt`: `resolve_run` (the rule the CLI's `--ckpt_path`
  follows) resumes the checkpoint only if it was written for this run. The fit then gets
  `--ckpt_path last` and `--checkpoint.dirpath <trial>/checkpoints`: the CLI reads the run id
  from the checkpoint, checks that the run is unfinished and of the same resolved config
  (which the trial's settings guarantee: the run is marked RUNNING before the fit starts), and
  continues it, dropping points the killed process had already logged. A `last.ckpt` of
  another run (another MLflow store, a deleted run) is moved aside and the trial starts afresh.
- a run without a checkpoint (killed in its first epoch): the fit starts over in the same run.

A failing fit leaves its log's tail as the run's `sweep.error` tag and the whole log as the
artifact `trial.log`, ends the run FAILED and raises, so Ray Tune marks the trial ERROR and goes
on with the others (the sweep's `FailureConfig(max_failures=0, fail_fast=False)`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run

from experiments.sweeps.progress import (
    REPORT_INTERVAL_S,
    REPORT_SECONDS_KEY,
    TEST_ACC_MEAN,
    TRIAL_SECONDS,
    FitProgress,
    wait_reporting,
)
from experiments.sweeps.spec import REPO_ROOT, SweepSpec, Trial
from lightning_modules.names import TEST, stage_prefix
from lightning_modules.tracking import LAST_CHECKPOINT, resolve_run

PARENT_TAG = "mlflow.parentRunId"
SWEEP_TAG = "sweep"
ROLE_TAG = "sweep.role"
HASH_TAG = "sweep.trial_hash"
STATE_TAG = "sweep.state"
ERROR_TAG = "sweep.error"
#: Tag prefix of each setting a trial changes (`setting.model.init_args.recalibration`).
SETTING_PREFIX = "setting."
#: How much of a failed trial's log goes into its `sweep.error` tag (MLflow caps tag values).
ERROR_TAIL_CHARS = 4000
# prctl(2) option: signal the child when the thread that started it dies.
PR_SET_PDEATHSIG = 1


def trial_dir(spec_output_dir: str | Path, trial: Trial) -> Path:
    return Path(spec_output_dir) / "trials" / trial.hash


def format_value(value: Any) -> str:
    """A value as jsonargparse reads it on the command line (lists and mappings as JSON)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    return json.dumps(value)


def trial_tags(spec: SweepSpec, trial: Trial, parent_run_id: str) -> dict[str, str]:
    """What the trial's run is found and grouped by in MLflow (and in the UI's filters)."""
    tags = {
        PARENT_TAG: parent_run_id,
        SWEEP_TAG: spec.name,
        ROLE_TAG: "trial",
        HASH_TAG: trial.hash,
        "sweep.trial_index": str(trial.index),
        "sweep.seed": str(trial.seed),
        "sweep.draw": str(trial.draw),
        "sweep.module": spec.module_of(trial),
        "sweep.held_out": "+".join(spec.held_out_of(trial)),
    }
    if spec.method_of(trial):
        tags["sweep.method"] = spec.method_of(trial)
    for key, value in {**trial.grid_point, **trial.hparams}.items():
        tags[f"{SETTING_PREFIX}{key}"] = format_value(value)
    return tags


def trial_run_name(spec: SweepSpec, trial: Trial) -> str:
    held_out = "+".join(spec.held_out_of(trial))
    parts = [spec.variant_of(trial), *spec.case_labels(trial)]
    parts += [f"out-{held_out}" if held_out else "", f"s{trial.seed}"]
    if spec.n_draws:
        parts.append(f"h{trial.draw}")
    return "-".join(p for p in parts if p)


def fit_arguments(spec: SweepSpec, trial: Trial) -> list[str]:
    """What follows `fit` for this trial: the base configs, then its overrides."""
    arguments = []
    for config in spec.configs:
        arguments += ["--config", str(config)]
    for key, value in trial.overrides.items():
        arguments.append(f"--{key}={format_value(value)}")
    return arguments


def trial_command(
    spec: SweepSpec,
    trial: Trial,
    tracking_uri: str,
    folder: Path,
    run_id: str | None,
    resume_from: Path | None,
) -> list[str]:
    """The trial's command line: `experiments.sweeps.fit_test <entry>` + its fit arguments."""
    command = [sys.executable, "-m", "experiments.sweeps.fit_test", spec.entry]
    command += fit_arguments(spec, trial)
    command += [
        f"--trainer.default_root_dir={folder}",
        f"--checkpoint.dirpath={folder / 'checkpoints'}",
        f"--trainer.logger.init_args.experiment_name={spec.experiment}",
        f"--trainer.logger.init_args.tracking_uri={tracking_uri}",
    ]
    if resume_from is not None:
        # `last` resolves to `<checkpoint.dirpath>/last.ckpt`, whose run the CLI continues.
        command.append("--ckpt_path=last")
    elif run_id is not None:
        command.append(f"--trainer.logger.init_args.run_id={run_id}")
    return command


def find_trial_runs(
    client: MlflowClient, experiment_id: str, sweep: str, parent_run_id: str
) -> dict[str, Run]:
    """The sweep's trial runs by trial hash (the newest where a hash has several)."""
    runs: dict[str, Run] = {}
    token = None
    query = (
        f"tags.`{SWEEP_TAG}` = '{sweep}' and tags.`{ROLE_TAG}` = 'trial' "
        f"and tags.`{PARENT_TAG}` = '{parent_run_id}'"
    )
    while True:
        page = client.search_runs(
            [experiment_id],
            query,
            max_results=1000,
            page_token=token,
            order_by=["attributes.start_time ASC"],
        )
        for run in page:
            runs[run.data.tags[HASH_TAG]] = run
        token = page.token
        if not token:
            return runs


#: Trial states as `status` counts them.
TRIAL_STATES = ("done", "running", "interrupted", "failed", "pending")


def trial_state(run: Run | None) -> str:
    """pending (no run yet), done, failed (the fit failed), interrupted (its process was
    stopped: Ctrl-C or SIGTERM ends the run KILLED or FAILED before the trial could say
    so), or running (MLflow's RUNNING: training now, or left so by a SIGKILLed sweep)."""
    if run is None:
        return "pending"
    state = run.data.tags.get(STATE_TAG)
    if run.info.status == "FINISHED" and state == "done":
        return "done"
    if state == "failed":
        return "failed"
    if run.info.status == "RUNNING":
        return "running"
    return "interrupted"


def _die_with_parent() -> None:
    """In the trial's child process: get SIGTERM when the Ray worker thread waiting on it dies,
    so a killed sweep leaves no fit writing on (Linux; elsewhere the fit runs to its end)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def run_trial(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Tune function trainable: runs (or resumes) one trial, returns its test metrics."""
    from ray import tune

    from experiments.sweeps.spec import load_spec

    spec = load_spec(config["spec_path"])
    trial = Trial.from_dict(config["trial"])
    tracking_uri = config["tracking_uri"]
    client = MlflowClient(tracking_uri)
    folder = trial_dir(config["output_dir"], trial)
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)

    run = find_trial_runs(client, config["experiment_id"], spec.name, config["parent_run_id"]).get(
        trial.hash
    )
    if run is None:
        run = client.create_run(
            config["experiment_id"],
            run_name=trial_run_name(spec, trial),
            tags=trial_tags(spec, trial, config["parent_run_id"]),
        )
    run_id = run.info.run_id
    client.set_tag(run_id, STATE_TAG, "running")
    client.update_run(run_id, status="RUNNING")
    last = folder / "checkpoints" / LAST_CHECKPOINT
    choice = resolve_run(last if last.is_file() else None, run_id=run_id)
    if last.is_file() and choice.ckpt_path is None:
        # Left by a sweep logged to another MLflow store (or a deleted run): resuming it would
        # log into a run that is not this trial's. Kept aside, and the trial starts afresh.
        stale = folder / f"checkpoints.stale-{time.strftime('%Y%m%d-%H%M%S')}"
        (folder / "checkpoints").rename(stale)
        (folder / "checkpoints").mkdir()
    resume_from = None if choice.ckpt_path is None else Path(choice.ckpt_path)
    command = trial_command(spec, trial, tracking_uri, folder, run_id, resume_from)
    threads = str(max(1, int(spec.resources["cpu"])))
    # Tracebacks in trial.log (the error tag keeps its end, which is the message).
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    env.setdefault("STYLEBENCH_DEBUG", "1")
    log_path = folder / "trial.log"
    progress = FitProgress(client, run_id)
    started = time.perf_counter()
    with log_path.open("a") as log:
        log.write(f"\n{choice.reason}\n$ {' '.join(command)}\n")
        log.flush()
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        # While the fit runs: its epoch and validation accuracy, read from its MLflow run, go
        # to Ray Tune as intermediate results (the sweep's progress lines).
        interval = config.get(REPORT_SECONDS_KEY, REPORT_INTERVAL_S)
        returncode = wait_reporting(process, progress, tune.report, interval)
    seconds = time.perf_counter() - started
    finished = client.get_run(run_id)
    metrics = finished.data.metrics
    if returncode == 0 and TEST_ACC_MEAN in metrics:
        client.set_tag(run_id, STATE_TAG, "done")
        client.log_metric(run_id, "sweep/trial_seconds", seconds)
        client.set_terminated(run_id, "FINISHED")
        return {k: v for k, v in metrics.items() if k.startswith(stage_prefix(TEST))} | {
            TRIAL_SECONDS: seconds
        }
    tail = log_path.read_text(errors="replace")[-ERROR_TAIL_CHARS:]
    problem = f"exit status {returncode}" if returncode else f"finished without {TEST_ACC_MEAN}"
    client.set_tag(run_id, ERROR_TAG, f"{problem}; end of trial.log:\n{tail}")
    client.set_tag(run_id, STATE_TAG, "failed")
    client.log_artifact(run_id, str(log_path))
    client.set_terminated(run_id, "FAILED")
    raise RuntimeError(
        f"trial {trial.hash} ({trial_run_name(spec, trial)}) failed: {problem}; log: {log_path}"
    )
