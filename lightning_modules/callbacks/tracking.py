"""Callbacks that keep a run's bookkeeping: the run id in every checkpoint, the writer lock on
its checkpoint folder, skipped bad images, and the resolved config (the CLI registers them)."""

from __future__ import annotations

import os
from typing import Any

import yaml
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import SaveConfigCallback

from lightning_modules.callbacks.contracts import BadImageReporting, require
from lightning_modules.names import BAD_IMAGES
from lightning_modules.tracking import RUN_ID_KEY, WriterLock, find_mlflow_logger
from lightning_modules.tracking.writer import release_folder


class MLflowRunIdCallback(Callback):
    """Stores the MLflow run id in every checkpoint, so a resumed run logs into the same run."""

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict
    ) -> None:
        logger = find_mlflow_logger(trainer)
        if logger is not None:
            checkpoint[RUN_ID_KEY] = logger.run_id


class RunWriterLock(Callback):
    """Holds the writer lock of the run's checkpoint folder(s) while it fits
    (`lightning_modules.tracking.writer`): from the start of `fit`, before any checkpoint is
    written, to its end, on global rank zero. A folder a live process holds already stops the
    fit with `RunInUseError` naming that process (the CLI checks a fixed `checkpoint.dirpath`
    and the run it resumes before the run starts; this catches the rest)."""

    def __init__(self) -> None:
        self._folders: list[str] = []

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        logger = find_mlflow_logger(trainer)
        run_id = logger.run_id if logger is not None else None
        folders = {
            callback.dirpath
            for callback in trainer.checkpoint_callbacks
            if isinstance(callback, ModelCheckpoint) and callback.dirpath
        }
        for folder in sorted(folders):
            WriterLock(folder).acquire(run_id)
            self._folders.append(folder)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        while self._folders:
            release_folder(self._folders.pop())


class BadImagesCallback(Callback):
    """Under `data.on_bad_image: skip`, reports the skipped images of every stage: at the end of
    each training, validation and test epoch it logs `data/bad_images/<split>` (skipped in the
    split the stage reads), and once per step `data/bad_images` (distinct images skipped so
    far, all splits: at the end of the training epoch during `fit`, after its validation; at
    the end of `validate` and `test`). It writes the list as the artifact `bad_images.txt` (one
    path a line, all splits), and says on the console when more images were skipped, so that
    no stage drops images without saying so.

    Needs a DataModule with `on_bad_image` and `bad_images(split=None)` (`BadImageReporting`).
    """

    #: How many skipped paths the console line names.
    SHOWN = 3

    def __init__(self) -> None:
        self.datamodule: BadImageReporting | None = None
        self._reported = 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.datamodule = require(trainer.datamodule, BadImageReporting, "BadImagesCallback")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._report(trainer, pl_module, "train", total=True)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            # During fit the training epoch's end logs the total, at this same step.
            self._report(trainer, pl_module, "val", total=not trainer.training)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._report(trainer, pl_module, "test", total=True)

    def _report(
        self, trainer: Trainer, pl_module: LightningModule, split: str, total: bool
    ) -> None:
        datamodule = self.datamodule
        if datamodule is None or datamodule.on_bad_image != "skip":
            return
        in_split = datamodule.bad_images(split)
        pl_module.log(f"{BAD_IMAGES}/{split}", float(len(in_split)))
        if not total:
            return
        paths = datamodule.bad_images()
        pl_module.log(BAD_IMAGES, float(len(paths)))
        logger = find_mlflow_logger(trainer)
        if not trainer.is_global_zero or len(paths) <= self._reported:
            return
        new = len(paths) - self._reported
        self._reported = len(paths)
        shown = ", ".join(printable(path) for path in paths[-new:][: self.SHOWN])
        where = f"the artifact bad_images.txt of MLflow run {logger.run_id}" if logger else ""
        print(
            f"Skipped {new} image(s) that cannot be read (data.on_bad_image: skip), "
            f"{len(paths)} so far: {shown}{', ...' if new > self.SHOWN else ''}"
            + (f"; the list is {where}" if where else "")
        )
        if logger is not None:
            # Non-UTF-8 file names (lone surrogates) as \xNN escapes: MLflow stores UTF-8 text.
            text = "".join(printable(path) + "\n" for path in paths)
            logger.experiment.log_text(logger.run_id, text, "bad_images.txt")


def printable(path: str) -> str:
    """A file name as UTF-8 text, undecodable bytes as `\\xNN` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def flatten_config(config: dict, prefix: str = "") -> dict[str, Any]:
    """{"model": {"init_args": {"backbone": "resnet50"}}} -> {"model.backbone": "resnet50"}."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key in ("init_args", "dict_kwargs"):
            flat.update(flatten_config(value, prefix))
            continue
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            flat.update(flatten_config(value, name))
        else:
            flat[name] = value
    return flat


class MLflowSaveConfigCallback(SaveConfigCallback):
    """Logs the resolved config to MLflow: whole as `config.yaml`, and flattened as params.

    MLflow cuts long param values, so the artifact is the authoritative copy.
    """

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        logger = find_mlflow_logger(trainer)
        if logger is None:
            return
        text = self.parser.dump(self.config, skip_none=False)
        params = flatten_config(yaml.safe_load(text))
        # Lists of callbacks and the like are unreadable as params; the artifact has them.
        params = {k: v for k, v in params.items() if not isinstance(v, list) or len(str(v)) < 250}
        logged = logger.experiment.get_run(logger.run_id).data.params
        if logged:
            # A resumed run: MLflow refuses to change a param, and the original config stays
            # the run's `config.yaml`; the resuming command's config is kept beside it.
            logger.experiment.log_text(logger.run_id, text, "config_resumed.yaml")
            params = {k: v for k, v in params.items() if k not in logged}
        else:
            logger.experiment.log_text(logger.run_id, text, "config.yaml")
        if params:
            logger.log_hyperparams(params)
