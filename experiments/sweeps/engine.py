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
hash rather than by their whole settings).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.sweeps.spec import SweepSpec, Trial

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


def progress_callback(total: int):
    """A Ray Tune callback printing one line as each trial starts, ends or fails (Tune's own
    progress tables are switched off: they list every setting of every trial)."""
    from ray.tune import Callback

    class Progress(Callback):
        def __init__(self) -> None:
            self.ended = 0
            self.started = time.perf_counter()

        def _line(self, trial: Any, what: str) -> None:
            t = trial.config["trial"]
            label = " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in t["grid_point"].items())
            elapsed = time.perf_counter() - self.started
            print(
                f"[{elapsed:6.0f} s] {self.ended}/{total} {what}: {label} seed={t['seed']} "
                f"draw={t['draw']} ({t['hash']})",
                flush=True,
            )

        def on_trial_start(self, iteration, trials, trial, **info):
            self._line(trial, "started")

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.ended += 1
            result = trial.last_result or {}
            accuracy = result.get("test/acc_mean")
            seconds = result.get("trial_seconds")
            extra = "" if accuracy is None else f" test/acc_mean {100 * accuracy:.1f}%"
            extra += "" if seconds is None else f" in {seconds:.0f} s"
            self._line(trial, "done" + extra)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.ended += 1
            self._line(trial, "FAILED (its error is on its MLflow run, tag sweep.error)")

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
) -> EngineResult:
    """Run `pending` trials under Ray Tune; returns how many were submitted and failed."""
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
            param_space={**common, "trial": tune.grid_search([t.to_dict() for t in pending])},
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
                callbacks=[progress_callback(len(pending))],
                verbose=0,
            ),
        )
        results = tuner.fit()
        errors = len(results.errors)
    finally:
        ray.shutdown()
    return EngineResult(len(pending), errors, time.perf_counter() - started, startup)
