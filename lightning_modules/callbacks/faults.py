"""Run-side faults: stopping cleanly on a signal, and never keeping a poisoned checkpoint.

`GracefulStop` turns SIGINT (Ctrl-C) into what Lightning does for SIGTERM, in the main process
only (a terminal's Ctrl-C reaches the DataLoader workers too; they ignore it): the step in flight
completes, Lightning raises its `SIGTERMException` at the batch boundary, the latest checkpoint
(`last.ckpt`) is written from that consistent state, the MLflow run ends KILLED
(`StylebenchMLFlowLogger.finalize`) and the entry point exits 128 + the signal
(`experiments.errors.run_main`). `--ckpt_path last` then resumes the same run.

`FiniteStateGuard` stops the run when the validation loss is NaN or infinite, and refuses to
write any checkpoint whose weights or buffers hold non-finite values (BatchNorm running
variances are the usual ones after a divergence), so `last.ckpt` is always one a resume can
use. The training-loss guard (`MultiDomainClassifier.training_step`) catches the loss itself.
"""

from __future__ import annotations

import math
import os
import signal
import threading
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

#: The signal that stopped the run in this process (None: none). Read by the entry points to
#: choose the exit code.
_received: list[int] = []


def received_signal() -> int | None:
    """The first SIGINT/SIGTERM that asked this process to stop, if any."""
    return _received[0] if _received else None


def forget_signal() -> None:
    """Forget a signal recorded earlier in this process (a new command starts)."""
    _received.clear()


class NonFiniteStateError(FloatingPointError):
    """The model's state or validation loss is not finite: training cannot continue from it."""


def non_finite_tensors(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of a state dict holding NaN or infinite values."""
    return [
        name
        for name, value in state.items()
        if isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and not bool(torch.isfinite(value).all())
    ]


class FiniteStateGuard(Callback):
    """Stop on a non-finite validation loss; never write a checkpoint of non-finite weights.

    Args:
        monitor: the validation loss logged by the model.
    """

    def __init__(self, monitor: str = "val/loss") -> None:
        self.monitor = monitor

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Runs before the checkpoint callbacks' on_validation_end (Lightning orders
        # ModelCheckpoint callbacks last), so a NaN validation writes no checkpoint.
        # During fit only: `validate` and `test` write no checkpoint.
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and not math.isfinite(float(value)):
            raise NonFiniteStateError(
                f"{self.monitor} is {float(value)} at epoch {trainer.current_epoch} (global "
                f"step {trainer.global_step}): training diverged; lower the learning rate. No "
                f"checkpoint is written from this state; {latest_checkpoint_note(trainer)}"
            )

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Called while the checkpoint is assembled, before any file is written: raising here
        # leaves the previous file in place.
        bad = non_finite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            total = len(checkpoint["state_dict"])
            raise NonFiniteStateError(
                f"{len(bad)} of {total} tensors of the model state are not finite at global "
                f"step {trainer.global_step} (e.g. {', '.join(bad[:3])}): training diverged; "
                f"lower the learning rate. The checkpoint is not written; "
                f"{latest_checkpoint_note(trainer)}"
            )


def latest_checkpoint_note(trainer: Trainer) -> str:
    """Which checkpoint is kept (the newest file in the trainer's checkpoint folders)."""
    folders = {
        Path(callback.dirpath)
        for callback in trainer.checkpoint_callbacks
        if isinstance(callback, ModelCheckpoint) and callback.dirpath
    }
    files = [
        path
        for folder in folders
        if folder.is_dir()
        for path in folder.glob(f"*{ModelCheckpoint.FILE_EXTENSION}")
    ]
    if not files:
        return "no checkpoint was written before"
    newest = max(files, key=lambda path: path.stat().st_mtime)
    return f"the checkpoints written before are kept (newest: {newest})"


def checkpoint_note(module: LightningModule) -> str:
    """`latest_checkpoint_note` of the module's trainer ("no checkpoint ..." without one)."""
    try:
        trainer = module.trainer
    except RuntimeError:  # not attached to a trainer
        return "no checkpoint was written before"
    return latest_checkpoint_note(trainer)


class GracefulStop(Callback):
    """SIGINT and SIGTERM stop training at the next batch boundary and write `last.ckpt`.

    Lightning handles SIGTERM itself (`received_sigterm`, then `SIGTERMException` after the
    current batch); SIGINT is routed to the same path by sending this process SIGTERM, so an
    interrupted run stops from a consistent state instead of wherever KeyboardInterrupt lands.
    A second Ctrl-C stops at once (KeyboardInterrupt). On the stop, the always-latest
    checkpoint callback's `last.ckpt` is written, unless the state is non-finite.
    """

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        #: The process whose training the handlers stop (not a forked child that inherits them).
        self._main_pid: int | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Lightning installs its SIGTERM handler after the setup hooks and calls the handler it
        # finds there too, so `_record` runs on SIGTERM beside Lightning's own.
        _received.clear()
        if threading.current_thread() is not threading.main_thread():
            return
        self._main_pid = os.getpid()
        for signum, handler in ((signal.SIGINT, self._on_sigint), (signal.SIGTERM, _record)):
            self._previous[signum] = signal.signal(signum, handler)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._main_pid:
            # A forked child (a DataLoader worker) inherits this handler, and a terminal's
            # Ctrl-C reaches the whole process group: only the main process stops the run, and
            # it stops its workers itself (`datamodules.data.loaders.quiet_worker_signals`).
            return
        if _received:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        print("\nInterrupted: stopping after this batch (Ctrl-C again to stop at once)")
        _record(signum, frame)
        # Lightning's SIGTERM handler (installed at the start of fit/validate/test) sets the
        # flag its loops check at each batch end.
        os.kill(os.getpid(), signal.SIGTERM)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException) or not trainer.training:
            return
        path = last_checkpoint_path(trainer)
        if path is None:
            return
        if non_finite_tensors(pl_module.state_dict()):
            print(f"Not writing {path}: the model state is not finite")
            return
        # The whole training state (Lightning's default, said so that it does not warn).
        trainer.save_checkpoint(path, weights_only=False)
        print(f"Stopped by signal {received_signal() or signal.SIGTERM}; wrote {path}")


def _record(signum: int, frame: Any) -> None:
    if not _received:
        _received.append(signum)


def last_checkpoint_path(trainer: Trainer) -> str | None:
    """Where the trainer keeps `last.ckpt` (the always-latest or the `save_last` callback)."""
    last = f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint) or not callback.dirpath:
            continue
        latest = callback.monitor is None and callback.filename == callback.CHECKPOINT_NAME_LAST
        if latest or callback.save_last:
            return str(Path(callback.dirpath) / last)
    return None
