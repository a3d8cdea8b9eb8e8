"""A running sweep's progress lines and time-left estimate (experiments/sweeps/progress.py), from
fake trial results and a fake clock; the trial side's reading of a real MLflow run and its
waiting on a real process."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow import MlflowClient

from experiments.sweeps.progress import (
    EPOCHS_DONE,
    MAX_EPOCHS,
    RESUMED_AT,
    TRIAL_SECONDS,
    FitProgress,
    SweepProgress,
    TrialProgress,
    estimate_seconds_left,
    format_duration,
    wait_reporting,
)
from lightning_modules.names import MONITOR


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def result(done: float, seconds: float, accuracy: float | None = None, resumed_at: float = 0.0):
    values = {EPOCHS_DONE: done, TRIAL_SECONDS: seconds, MAX_EPOCHS: 24.0, RESUMED_AT: resumed_at}
    return values if accuracy is None else {**values, MONITOR: accuracy}


def test_a_trials_time_left_counts_only_this_process_epochs():
    fresh = TrialProgress.from_result(result(4, 40.0))
    assert fresh.seconds_per_epoch() == 10.0 and fresh.seconds_left() == 20 * 10.0
    assert fresh.full_seconds() == 24 * 10.0
    # Resumed at epoch 10: 2 epochs in 40 s, 12 left.
    resumed = TrialProgress.from_result(result(12, 40.0, resumed_at=10))
    assert resumed.seconds_left() == 12 * 20.0
    # Before its first epoch ends nothing is known; the final result carries no progress.
    assert TrialProgress.from_result(result(0, 15.0)).seconds_left() is None
    assert TrialProgress.from_result({"test/acc_mean": 0.9, TRIAL_SECONDS: 300.0}) is None


def test_estimate_fills_the_slot_that_frees_first():
    # Two slots: running trials end in 200 and 396 s; three waiting ones of 336 s each start at
    # 200 (ends 536), 396 (ends 732) and 536 (ends 872).
    assert estimate_seconds_left([200.0, 396.0], 3, 336.0, 2) == pytest.approx(872.0)
    # A free slot starts a waiting trial at once; nothing left is 0; unknown stays unknown.
    assert estimate_seconds_left([100.0], 1, 300.0, 2) == pytest.approx(300.0)
    assert estimate_seconds_left([], 0, None, 2) == 0.0
    assert estimate_seconds_left([None], 0, None, 1) is None
    assert estimate_seconds_left([50.0], 2, None, 1) is None
    assert estimate_seconds_left([None, 30.0], 0, 100.0, 2) == pytest.approx(100.0)


def test_durations_read_naturally():
    assert [format_duration(s) for s in (45, 420, 3900)] == ["45 s", "7 min", "1 h 05 min"]


def test_progress_block_every_interval_with_epochs_accuracy_and_time_left():
    clock = Clock()
    sweep = SweepProgress(total=5, started=-5.0, clock=clock, interval=30.0)
    assert not sweep.due()
    a, b = "recalibration=none seed=0 draw=0 (h1)", "recalibration=srm seed=0 draw=0 (h2)"
    assert sweep.trial_started("a", a) == f"[     5 s] 0/5 started: {a}"
    sweep.trial_started("b", b)
    clock.now = 29.0
    assert not sweep.due()
    clock.now = 40.0
    sweep.trial_result("a", result(4, 40.0, accuracy=0.712))
    sweep.trial_result("b", result(2, 36.0))
    assert sweep.due()
    # a: 10 s/epoch, 200 s left, 240 s in all; b: 18 s/epoch, 396 s left, 432 in all; a trial
    # takes (240 + 432) / 2 = 336 s, and the estimate above gives 872 s (about 15 min).
    assert sweep.block() == [
        "[    45 s] progress: 0/5 ended, 2 running, 3 waiting; 45 s elapsed, about 15 min left",
        f"[    45 s]   {a}: epoch 5/24, val/acc_mean 71.2%, ~3 min left",
        f"[    45 s]   {b}: epoch 3/24, val/acc_mean -, ~7 min left",
    ]
    assert not sweep.due()
    clock.now = 70.0
    assert sweep.due()
    # 30 s after its result, a's estimate has aged by 30 s.
    assert sweep.block()[1].endswith("~3 min left")  # 170 s
    clock.now = 100.0
    assert sweep.trial_ended("a", a, "done in 250 s", 250.0) == f"[   105 s] 1/5 done in 250 s: {a}"
    sweep.trial_started("c", "c")
    # Finished trials set a trial's length: 250 s. b: 396 - 60 = 336 s left; c, without a
    # result yet, 250 s; two waiting: 250 + 250 = 500 and 336 + 250 = 586.
    assert sweep.seconds_left() == pytest.approx(586.0)
    sweep.trial_ended("b", b, "FAILED")
    assert sweep.trial_seconds() == 250.0  # a failed trial's time does not count


def test_fit_progress_reads_the_runs_epoch_accuracy_and_length(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("progress")).info.run_id
    # A resumed run: an earlier process got to epoch 3.
    client.log_metric(run_id, "epoch", 3, step=30)
    times = iter([100.0, 160.0])
    progress = FitProgress(client, run_id, clock=lambda: next(times))
    assert progress.resumed_at == 3.0
    client.log_param(run_id, "trainer.max_epochs", "24")
    for step, epoch, accuracy in ((40, 4, 0.61), (50, 5, 0.64)):
        client.log_metric(run_id, "epoch", epoch, step=step)
        client.log_metric(run_id, MONITOR, accuracy, step=step)
    assert progress() == {
        EPOCHS_DONE: 5.0,
        MONITOR: pytest.approx(0.64),
        MAX_EPOCHS: 24.0,
        RESUMED_AT: 3.0,
        TRIAL_SECONDS: 60.0,
    }

    class Down:
        def get_run(self, run_id):
            raise ConnectionError("store unreachable")

    progress.client = Down()
    assert progress() == {}  # nothing to report this time; the trial goes on


def test_wait_reporting_reports_while_the_process_runs_and_returns_its_status():
    reports = []
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1); exit(3)"])
    assert wait_reporting(process, lambda: {"n": len(reports)}, reports.append, 0.1) == 3
    assert len(reports) >= 3 and reports[:2] == [{"n": 0}, {"n": 1}]
    # Nothing to report: nothing sent.
    quiet = []
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    assert wait_reporting(process, dict, quiet.append, 0.05) == 0 and quiet == []


def test_an_interrupted_wait_kills_the_process():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    def report(values):
        raise RuntimeError("trial stopped")

    with pytest.raises(RuntimeError, match="trial stopped"):
        wait_reporting(process, lambda: {"x": 1.0}, report, 0.05)
    assert process.poll() is not None
