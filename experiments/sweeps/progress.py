"""A running sweep's progress: how far each trial's fit has got, and the time left.

A trial's fit runs in a process of its own and logs to its MLflow run. While the trial function
waits for that process (`wait_reporting`), it reads the run every `REPORT_INTERVAL_S`
(`FitProgress`: Lightning's `epoch` metric, the latest `val/acc_mean`, and the
`trainer.max_epochs` param the CLI logs with the config) and reports it to Ray Tune with
`tune.report`; nothing new is logged. The engine's Tune callback hands every trial's results to
`SweepProgress`, which prints, at most every `PRINT_INTERVAL_S`, one line for the sweep (trials
done, running and waiting, elapsed time, time left) and one per running trial (epoch, latest
`val/acc_mean`, its own time left).

The time left (`estimate_seconds_left`) assumes each trial's remaining epochs take as long as its
epochs so far, and each waiting trial as long as the finished ones took (before any finished:
the running ones' projected length), started on whichever trial slot frees first.
"""

from __future__ import annotations

import contextlib
import heapq
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightning_modules.names import ACC_MEAN, EPOCH, MONITOR, TEST, metric_key

#: How often the sweep prints its progress block while trials run (`sweep run --progress-seconds`).
PRINT_INTERVAL_S = 30.0
#: How often a trial reads its fit's MLflow run and reports to Ray Tune (at most: three reports
#: per progress block, so that each block is recent).
REPORT_INTERVAL_S = 10.0
#: The trial config's key for the report interval.
REPORT_SECONDS_KEY = "report_seconds"
#: The param (the flattened config the CLI logs) giving the fit's length.
MAX_EPOCHS_PARAM = "trainer.max_epochs"
#: Keys of a trial's progress results in Ray Tune (beside `MONITOR`, the latest validation).
EPOCHS_DONE = "progress/epochs_done"
RESUMED_AT = "progress/resumed_at"
MAX_EPOCHS = "progress/max_epochs"
#: Seconds since the trial's process started (also in its final result).
TRIAL_SECONDS = "trial_seconds"
#: What a finished trial's result holds (with its other test metrics) and the done line shows.
TEST_ACC_MEAN = metric_key(TEST, ACC_MEAN)


class FitProgress:
    """Reads a trial's fit from its MLflow run; calling it gives the result to report.

    Built just before the fit's process starts, it remembers the epochs the run already holds
    (a resumed trial's earlier process), so the time per epoch counts only this process's.
    Lightning logs `epoch` (0-based, the epoch in progress) beside every metric, so its latest
    value is also the number of epochs finished.
    """

    def __init__(self, client: Any, run_id: str, clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.run_id = run_id
        self.clock = clock
        self.resumed_at = self.read().get(EPOCHS_DONE, 0.0)
        self.started = clock()

    def read(self) -> dict[str, float]:
        """The run's progress metrics; empty when the store cannot be read now."""
        try:
            data = self.client.get_run(self.run_id).data
        except Exception:
            # Only a progress line depends on it: a busy (SQLite locked) or unreachable store
            # must never fail the trial, and the next read comes REPORT_INTERVAL_S later.
            return {}
        progress = {EPOCHS_DONE: float(data.metrics.get(EPOCH, 0.0))}
        if MONITOR in data.metrics:
            progress[MONITOR] = float(data.metrics[MONITOR])
        # Absent until the fit has logged its config; `null` (no limit) gives no total.
        with contextlib.suppress(KeyError, ValueError):
            progress[MAX_EPOCHS] = float(data.params[MAX_EPOCHS_PARAM])
        return progress

    def __call__(self) -> dict[str, float]:
        progress = self.read()
        if progress:
            progress[RESUMED_AT] = self.resumed_at
            progress[TRIAL_SECONDS] = self.clock() - self.started
        return progress


def report_interval(print_interval: float) -> float:
    """How often trials report, for progress blocks every `print_interval` seconds."""
    return min(REPORT_INTERVAL_S, print_interval / 3)


def wait_reporting(
    process: subprocess.Popen,
    poll: Callable[[], Mapping[str, float]],
    report: Callable[[dict], None],
    interval: float = REPORT_INTERVAL_S,
) -> int:
    """Wait for `process`, reporting `poll()` (when not empty) every `interval` seconds; returns
    the exit status. If the wait is interrupted (an exception, Ray stopping the trial), the
    process is killed first, as `subprocess.run` does."""
    try:
        while True:
            try:
                return process.wait(timeout=interval)
            except subprocess.TimeoutExpired:
                progress = poll()
                if progress:
                    report(dict(progress))
    except BaseException:
        process.kill()
        process.wait()
        raise


@dataclass
class TrialProgress:
    """A running trial as its latest progress result describes it."""

    epochs_done: float
    seconds: float
    max_epochs: float | None = None
    resumed_at: float = 0.0
    val_acc: float | None = None

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> TrialProgress | None:
        """None for a result without progress (the final one: test metrics)."""
        if EPOCHS_DONE not in result or TRIAL_SECONDS not in result:
            return None
        return cls(
            epochs_done=result[EPOCHS_DONE],
            seconds=result[TRIAL_SECONDS],
            max_epochs=result.get(MAX_EPOCHS),
            resumed_at=result.get(RESUMED_AT, 0.0),
            val_acc=result.get(MONITOR),
        )

    def seconds_per_epoch(self) -> float | None:
        trained = self.epochs_done - self.resumed_at
        return self.seconds / trained if trained > 0 else None

    def seconds_left(self) -> float | None:
        per_epoch = self.seconds_per_epoch()
        if per_epoch is None or not self.max_epochs:
            return None
        return max(0.0, self.max_epochs - self.epochs_done) * per_epoch

    def full_seconds(self) -> float | None:
        """How long the whole fit takes at this pace, from its first epoch."""
        per_epoch = self.seconds_per_epoch()
        return None if per_epoch is None or not self.max_epochs else self.max_epochs * per_epoch

    def describe(self) -> str:
        """`epoch 5/24, val/acc_mean 71.2%`: the epoch in progress and the latest validation."""
        total = f"{self.max_epochs:.0f}" if self.max_epochs else "?"
        epoch = self.epochs_done + 1
        if self.max_epochs:
            epoch = min(epoch, self.max_epochs)
        accuracy = "-" if self.val_acc is None else f"{100 * self.val_acc:.1f}%"
        return f"epoch {epoch:.0f}/{total}, {MONITOR} {accuracy}"


def estimate_seconds_left(
    running: Sequence[float | None], waiting: int, trial_seconds: float | None, slots: int
) -> float | None:
    """Seconds until the last trial ends; None while that cannot be estimated.

    Args:
        running: each running trial's seconds left (None: not known yet, taken as a whole
            `trial_seconds`).
        waiting: trials not started yet, each taking `trial_seconds`.
        trial_seconds: a whole trial's expected length (None: unknown).
        slots: trials run at once; a waiting trial starts as soon as one ends.
    """
    if trial_seconds is None and (waiting or any(left is None for left in running)):
        return None
    free_at = [trial_seconds if left is None else left for left in running]
    free_at += [0.0] * max(0, slots - len(free_at))
    if not free_at:
        return None if waiting else 0.0
    heapq.heapify(free_at)
    for _ in range(waiting):
        heapq.heappush(free_at, heapq.heappop(free_at) + trial_seconds)
    return max(free_at)


def format_duration(seconds: float) -> str:
    """`45 s`, `7 min`, `1 h 05 min`: to the second under a minute, else to the minute."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


@dataclass
class _Trial:
    label: str
    started: float
    progress: TrialProgress | None = None
    #: When the progress result arrived: its estimate of the time left has aged since.
    reported: float = 0.0


@dataclass
class SweepProgress:
    """What the sweep's Tune callback prints: a line per trial event, and a progress block.

    Args:
        total: the trials this run submits.
        started: when the sweep started (`clock` time), for the elapsed time.
        clock: seconds, monotonic.
        interval: seconds between progress blocks.
    """

    total: int
    started: float
    clock: Callable[[], float] = time.monotonic
    interval: float = PRINT_INTERVAL_S
    ended: int = 0
    running: dict[str, _Trial] = field(default_factory=dict)
    finished_seconds: list[float] = field(default_factory=list)
    slots: int = 0
    last_block: float | None = None

    def elapsed(self) -> float:
        return self.clock() - self.started

    def _stamp(self) -> str:
        return f"[{self.elapsed():6.0f} s]"

    def trial_started(self, key: str, label: str) -> str:
        self.running[key] = _Trial(label, self.clock())
        self.slots = max(self.slots, len(self.running))
        if self.last_block is None:
            self.last_block = self.clock()  # the first block comes an interval after a start
        return f"{self._stamp()} {self.ended}/{self.total} started: {label}"

    def trial_result(self, key: str, result: Mapping[str, Any]) -> None:
        trial = self.running.get(key)
        progress = TrialProgress.from_result(result)
        if trial is not None and progress is not None:
            trial.progress, trial.reported = progress, self.clock()

    def trial_ended(self, key: str, label: str, what: str, seconds: float | None = None) -> str:
        """`what`: done (then `seconds` counts toward a trial's expected length) or failed."""
        self.running.pop(key, None)
        self.ended += 1
        if seconds is not None:
            self.finished_seconds.append(seconds)
        return f"{self._stamp()} {self.ended}/{self.total} {what}: {label}"

    def trial_seconds(self) -> float | None:
        """A whole trial's expected length: the finished trials' mean, else the running ones'
        projected mean."""
        if self.finished_seconds:
            return statistics.fmean(self.finished_seconds)
        projected = [
            t.progress.full_seconds() for t in self.running.values() if t.progress is not None
        ]
        projected = [p for p in projected if p is not None]
        return statistics.fmean(projected) if projected else None

    def _seconds_left(self, trial: _Trial, whole: float | None) -> float | None:
        now = self.clock()
        left = None if trial.progress is None else trial.progress.seconds_left()
        if left is not None:
            return max(0.0, left - (now - trial.reported))
        return None if whole is None else max(0.0, whole - (now - trial.started))

    def seconds_left(self) -> float | None:
        whole = self.trial_seconds()
        running = [self._seconds_left(t, whole) for t in self.running.values()]
        waiting = max(0, self.total - self.ended - len(self.running))
        return estimate_seconds_left(running, waiting, whole, max(self.slots, 1))

    def due(self) -> bool:
        """A block is due: trials are running and the last block is `interval` old."""
        return (
            bool(self.running)
            and self.last_block is not None
            and self.clock() - self.last_block >= self.interval
        )

    def block(self) -> list[str]:
        """The progress block: the sweep's line, then one per running trial."""
        self.last_block = self.clock()
        whole = self.trial_seconds()
        left = self.seconds_left()
        waiting = max(0, self.total - self.ended - len(self.running))
        eta = (
            "time left: known after the first epochs"
            if left is None
            else f"about {format_duration(left)} left"
        )
        lines = [
            f"{self._stamp()} progress: {self.ended}/{self.total} ended, {len(self.running)} "
            f"running, {waiting} waiting; {format_duration(self.elapsed())} elapsed, {eta}"
        ]
        for trial in self.running.values():
            state = "starting" if trial.progress is None else trial.progress.describe()
            trial_left = self._seconds_left(trial, whole)
            if trial_left is not None:
                state += f", ~{format_duration(trial_left)} left"
            lines.append(f"{self._stamp()}   {trial.label}: {state}")
        return lines
