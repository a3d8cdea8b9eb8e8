"""Running the trials with Ray Tune: embedded local Ray by default, or a running Ray cluster.

Ray Tune schedules; nothing here does. The unfinished trials go to a `tune.Tuner` as a grid
over trial descriptions, each trial asks `tune.with_resources` for the sweep file's `resources`
(CPUs, GPUs), and Ray runs as many at once as the machine (or cluster) has room for
(`max_concurrent_trials` caps it). What is finished is decided from MLflow before Ray starts,
so Ray Tune's own experiment state is not needed to continue a sweep: each `run` is a new Tune
run over what is left.

Local Ray is sized to this machine (all CPUs and GPUs, or `--num-cpus`/`--num-gpus`), without
its dashboard, with a small object store (trials pass only their settings and final metrics),
and quiet (no usage stats, deduplicated worker logs; trials are named by module, seed, draw and
hash rather than by their whole settings). What it prints: a line as each trial starts and ends,
and every 30 s each running trial's epoch and latest `val/acc_mean` with the sweep's elapsed time
and time left, from the results the trials report to Tune while their fits run (`progress.py`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.sweeps.expansion import SweepSpec, Trial
from experiments.sweeps.progress import (
    PRINT_INTERVAL_S,
    REPORT_SECONDS_KEY,
    TEST_ACC_MEAN,
    TRIAL_SECONDS,
    SweepProgress,
    report_interval,
)

#: Environment for a quiet Ray on a shared machine (set before Ray is imported).
RAY_ENVIRONMENT = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # A trial's working directory stays the project (the trainable passes its own cwd anyway).
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
    "RAY_DEDUP_LOGS": "1",
    "TUNE_RESULT_BUFFER_LENGTH": "1",
}
#: Ray's object store holds only trial settings and results: 80 MB is plenty (Ray's minimum
#: is ~75 MB); its default is 30% of memory.
OBJECT_STORE_BYTES = 80 * 1024**2


@dataclass
class EngineResult:
    submitted: int
    errors: int
    seconds: float
    startup_seconds: float


def local_resources(num_cpus: int | None, num_gpus: int | None) -> tuple[int, int]:
    """This machine's CPUs (the ones this process may use) and CUDA GPUs, unless given."""
    if num_cpus is None:
        num_cpus = (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else (os.cpu_count() or 1)
        )
    if num_gpus is None:
        try:
            import torch

            num_gpus = torch.cuda.device_count()
        except ImportError:
            num_gpus = 0
    return num_cpus, num_gpus


def start_ray(address: str | None, num_cpus: int | None, num_gpus: int | None) -> float:
    """Connect to the cluster at `address` (or $RAY_ADDRESS), else start local Ray; returns
    the seconds it took."""
    for key, value in RAY_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    import ray

    started = time.perf_counter()
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level="WARNING", log_to_driver=True)
    else:
        cpus, gpus = local_resources(num_cpus, num_gpus)
        ray.init(
            num_cpus=cpus,
            num_gpus=gpus,
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            logging_level="WARNING",
            log_to_driver=True,
        )
    return time.perf_counter() - started


def trial_label(trial: dict[str, Any]) -> str:
    """A trial as progress lines name it: its grid point, seed, draw and hash."""
    point = " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in trial["grid_point"].items())
    return f"{point} seed={trial['seed']} draw={trial['draw']} ({trial['hash']})"


def progress_callback(total: int, started: float, interval: float = PRINT_INTERVAL_S):
    """A Ray Tune callback printing a line as each trial starts, ends or fails, and every
    `interval` seconds a progress block: each running trial's epoch and latest `val/acc_mean`
    (what the trials report while their fits run), the elapsed time and the time left (see
    `experiments/sweeps/progress.py`). Tune's own progress tables are switched off: they list
    every setting of every trial."""
    from ray.tune import Callback

    class Progress(Callback):
        def __init__(self) -> None:
            self.sweep = SweepProgress(total, started, interval=interval)

        @staticmethod
        def _print(*lines: str) -> None:
            print("\n".join(lines), flush=True)

        def on_trial_start(self, iteration, trials, trial, **info):
            label = trial_label(trial.config["trial"])
            self._print(self.sweep.trial_started(trial.trial_id, label))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.sweep.trial_result(trial.trial_id, result)

        def on_step_end(self, iteration, trials, **info):
            if self.sweep.due():
                self._print(*self.sweep.block())

        def on_trial_complete(self, iteration, trials, trial, **info):
            result = trial.last_result or {}
            accuracy = result.get(TEST_ACC_MEAN)
            seconds = result.get(TRIAL_SECONDS)
            extra = "" if accuracy is None else f" {TEST_ACC_MEAN} {100 * accuracy:.1f}%"
            extra += "" if seconds is None else f" in {seconds:.0f} s"
            label = trial_label(trial.config["trial"])
            self._print(self.sweep.trial_ended(trial.trial_id, label, "done" + extra, seconds))

        def on_trial_error(self, iteration, trials, trial, **info):
            label = trial_label(trial.config["trial"])
            what = "FAILED (its error is on its MLflow run, tag sweep.error)"
            self._print(self.sweep.trial_ended(trial.trial_id, label, what))

    return Progress()


def trial_name(trial: Any) -> str:
    """Ray's name (and folder) of a trial, `trial<index>-s<seed>-h<draw>-<hash>`, instead of
    one made of all its settings."""
    t = trial.config["trial"]
    return f"trial{t['index']:04d}-s{t['seed']}-h{t['draw']}-{t['hash']}"


def run_with_tune(
    spec: SweepSpec,
    pending: list[Trial],
    common: dict[str, Any],
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    progress_seconds: float = PRINT_INTERVAL_S,
) -> EngineResult:
    """Run `pending` trials under Ray Tune, printing their progress every `progress_seconds`;
    returns how many were submitted and failed."""
    sweep_started = time.monotonic()
    startup = start_ray(address, num_cpus, num_gpus)
    import ray
    from ray import tune

    from experiments.sweeps.trials import run_trial

    started = time.perf_counter()
    try:
        trainable = tune.with_resources(
            run_trial, {"cpu": spec.resources["cpu"], "gpu": spec.resources["gpu"]}
        )
        tuner = tune.Tuner(
            trainable,
            param_space={
                **common,
                REPORT_SECONDS_KEY: report_interval(progress_seconds),
                "trial": tune.grid_search([t.to_dict() for t in pending]),
            },
            tune_config=tune.TuneConfig(
                num_samples=1,
                max_concurrent_trials=spec.max_concurrent_trials,
                trial_name_creator=trial_name,
                trial_dirname_creator=trial_name,
            ),
            run_config=tune.RunConfig(
                name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str(Path(spec.output_dir, "ray").resolve()),
                # A failed trial is reported (and kept on its MLflow run), never retried here
                # and never stopping the others; `run` again retries it.
                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                callbacks=[progress_callback(len(pending), sweep_started, progress_seconds)],
                verbose=0,
            ),
        )
        results = tuner.fit()
        errors = len(results.errors)
    finally:
        ray.shutdown()
    return EngineResult(len(pending), errors, time.perf_counter() - started, startup)
