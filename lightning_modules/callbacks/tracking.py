"""Callbacks that write run bookkeeping to MLflow: the run id in every checkpoint, skipped bad
images, and the resolved config (the CLI registers all three)."""

from __future__ import annotations

import os
from typing import Any

import yaml
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.cli import SaveConfigCallback

from lightning_modules.callbacks.contracts import BadImageReporting, require
from lightning_modules.names import BAD_IMAGES
from lightning_modules.tracking import RUN_ID_KEY, find_mlflow_logger


class MLflowRunIdCallback(Callback):
    """Stores the MLflow run id in every checkpoint, so a resumed run logs into the same run."""

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict
    ) -> None:
        logger = find_mlflow_logger(trainer)
        if logger is not None:
            checkpoint[RUN_ID_KEY] = logger.run_id


class BadImagesCallback(Callback):
    """Under `data.on_bad_image: skip`, reports the skipped images of every stage: at the end of
    each training, validation and test epoch it logs `data/bad_images` (distinct images skipped
    so far, all splits) and `data/bad_images/<split>` (in the split the stage reads), and writes
    the list as the artifact `bad_images.txt` (one path a line, all splits), so that
    `validate` and `test` never drop images without saying so.

    Needs a DataModule with `on_bad_image` and `bad_images(split=None)` (`BadImageReporting`).
    """

    def __init__(self) -> None:
        self.datamodule: BadImageReporting | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.datamodule = require(trainer.datamodule, BadImageReporting, "BadImagesCallback")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._report(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._report(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._report(trainer, pl_module, "test")

    def _report(self, trainer: Trainer, pl_module: LightningModule, split: str) -> None:
        datamodule = self.datamodule
        if datamodule is None or datamodule.on_bad_image != "skip":
            return
        in_split = datamodule.bad_images(split)
        pl_module.log(f"{BAD_IMAGES}/{split}", float(len(in_split)))
        pl_module.log(BAD_IMAGES, float(len(datamodule.bad_images())))
        logger = find_mlflow_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        paths = datamodule.bad_images()
        if paths:
            # Non-UTF-8 file names (lone surrogates) as \xNN escapes: MLflow stores UTF-8 text.
            text = "".join(
                os.fsencode(path).decode("utf-8", "backslashreplace") + "\n" for path in paths
            )
            logger.experiment.log_text(logger.run_id, text, "bad_images.txt")


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
