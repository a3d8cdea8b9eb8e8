"""Callbacks that write run bookkeeping to MLflow: the run id in every checkpoint, skipped bad
images, and the resolved config (the CLI registers all three)."""

from __future__ import annotations

from typing import Any

import yaml
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.cli import SaveConfigCallback

from lightning_modules.callbacks.contracts import BadImageReporting, require
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
    """Under `data.on_bad_image: skip`, logs `data/bad_images` (how many distinct images were
    skipped so far) at each epoch end and the list as the artifact `bad_images.txt`.

    Needs a DataModule with `on_bad_image` and `bad_images()` (`BadImageReporting`).
    """

    def __init__(self) -> None:
        self.datamodule: BadImageReporting | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.datamodule = require(trainer.datamodule, BadImageReporting, "BadImagesCallback")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        datamodule = self.datamodule
        if datamodule.on_bad_image != "skip":
            return
        paths = datamodule.bad_images()
        pl_module.log("data/bad_images", float(len(paths)))
        logger = find_mlflow_logger(trainer)
        if paths and logger is not None and trainer.is_global_zero:
            logger.experiment.log_text(logger.run_id, "\n".join(paths) + "\n", "bad_images.txt")


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
