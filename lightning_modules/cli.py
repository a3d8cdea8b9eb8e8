"""The LightningCLI every `python -m experiments.<dataset>` entry point runs.

YAML config -> LightningCLI -> DataModule (domains, splits, loaders) and `MultiDomainClassifier`
(backbone + per-domain heads) -> Trainer (strategy, devices) -> MLflow.
"""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from datamodules.base import MultiDomainDataModule
from lightning_modules.artifacts import EvaluationArtifacts
from lightning_modules.classifier import MultiDomainClassifier
from lightning_modules.tracking import (
    BadImagesCallback,
    MLflowRunIdCallback,
    MLflowSaveConfigCallback,
    StylebenchMLFlowLogger,
    code_version,
    read_checkpoint_run_id,
)


class ModelCheckpointWithLatest(ModelCheckpoint):
    """Lightning's ModelCheckpoint whose `last.ckpt` is always the latest state.

    Since Lightning 2.x, `save_last=True` writes `last.ckpt` only when a top-k checkpoint is
    written in the same step: once the monitored metric stops improving, `last.ckpt` stays at
    the last improvement, and `--ckpt_path last` would resume from there, repeating epochs.
    This class also writes it at every validation (or training-epoch end) that the monitored
    checkpoint skipped. Everything else, including the top-k files, is ModelCheckpoint's.
    """

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_latest(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_latest(trainer)

    def _save_latest(self, trainer) -> None:
        if (
            self.save_last
            and not self._should_skip_saving_checkpoint(trainer)
            and self._last_global_step_saved != trainer.global_step
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


# DataModule facts the model is built from: the data decides, the config says it once.
LINKED_FROM_DATA = {
    "num_classes": "num_classes",
    "domain_names": "domain_names",
    "trained_domain_names": "head_domains",
    "class_names": "class_names",
    "image_size": "image_size",
}


class StylebenchCLI(LightningCLI):
    """LightningCLI with MLflow logging, checkpointing on `val/acc_mean` and data->model links."""

    def __init__(self, datamodule_class=MultiDomainDataModule, args=None, run: bool = True):
        super().__init__(
            model_class=MultiDomainClassifier,
            datamodule_class=datamodule_class,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=MLflowSaveConfigCallback,
            save_config_kwargs={"overwrite": True, "save_to_log_dir": False},
            seed_everything_default=0,
            trainer_defaults={
                "logger": {"class_path": "lightning_modules.tracking.StylebenchMLFlowLogger"},
                "default_root_dir": "outputs",
            },
            # The model builds its own parameter groups (weight-decay exemptions, backbone LR).
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpointWithLatest, "checkpoint")
        # Figures and per-class tables per run in MLflow (`--evaluation_artifacts.*`).
        parser.add_lightning_class_args(EvaluationArtifacts, "evaluation_artifacts")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc_mean",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-epoch{epoch:03d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        for source, target in LINKED_FROM_DATA.items():
            parser.link_arguments(
                f"data.{source}", f"model.init_args.{target}", apply_on="instantiate"
            )

    def _describe_run(self) -> None:
        """Name the MLflow run and tag it before anything is logged."""
        data, model = self.datamodule, self.model
        self._add_fault_callbacks()
        backbone, module = model.hparams.backbone, model.hparams.recalibration
        run_name = f"{backbone}-{module}-{data.protocol}"
        if self.subcommand != "fit":
            run_name += f"-{self.subcommand}"
        for logger in self.trainer.loggers:
            if isinstance(logger, StylebenchMLFlowLogger):
                logger.set_default_names(data.dataset_name, run_name)
                if self.subcommand == "fit":
                    self._resume_checkpoint_run(logger)
                if self.trainer.is_global_zero:
                    logger.set_tags(
                        {
                            "dataset": data.dataset_name,
                            "protocol": data.protocol,
                            "backbone": backbone,
                            "module": module,
                            "weights": model.hparams.weights or "scratch",
                            "seed": self.config[self.subcommand].get("seed_everything"),
                            "stage": self.subcommand,
                            "code_version": code_version(),
                        }
                    )

    def _add_fault_callbacks(self) -> None:
        """The run id goes into every checkpoint; skipped bad images are reported to MLflow."""
        present = {type(callback) for callback in self.trainer.callbacks}
        for callback_class in (MLflowRunIdCallback, BadImagesCallback):
            if callback_class not in present:
                # Before the checkpoint callbacks, which Lightning keeps last.
                self.trainer.callbacks.insert(0, callback_class())

    def _resume_checkpoint_run(self, logger: StylebenchMLFlowLogger) -> None:
        """`fit --ckpt_path last|<file>`: continue the checkpoint's MLflow run, not a new one.

        Checkpoints live in `<default_root_dir>/<experiment id>/<run id>/checkpoints`, so "last"
        cannot be found before the run id is known: it is resolved here to the `last.ckpt` of
        the newest run with this config's run name (or in `checkpoint.dirpath` when set).
        """
        config = self.config_init[self.subcommand]
        ckpt_path = config.get("ckpt_path")
        if not ckpt_path or logger._run_id is not None:
            return
        if ckpt_path == "last":
            ckpt_path = self._find_last_checkpoint(logger)
            if ckpt_path is None:
                return  # Lightning warns that there is none and trains from scratch
            config["ckpt_path"] = ckpt_path
        run_id = read_checkpoint_run_id(ckpt_path)
        if run_id is not None:
            logger.resume(run_id)
            print(f"Resuming MLflow run {run_id} from {ckpt_path}")

    def _find_last_checkpoint(self, logger: StylebenchMLFlowLogger) -> str | None:
        callback = self.trainer.checkpoint_callback
        last_name = f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
        if callback is not None and callback.dirpath:
            candidates = [Path(callback.dirpath) / last_name]
        else:
            experiment_id, run_ids = logger.recent_runs_named_like_this()
            root = Path(logger.save_dir or self.trainer.default_root_dir)
            candidates = [
                root / str(experiment_id) / run_id / "checkpoints" / last_name for run_id in run_ids
            ]
        return next((str(path) for path in candidates if path.is_file()), None)

    before_fit = before_validate = before_test = before_predict = _describe_run


def run_cli(datamodule_class=MultiDomainDataModule, args=None) -> StylebenchCLI:
    """Entry point shared by the experiments: `main(args=None)` calls this."""
    return StylebenchCLI(datamodule_class=datamodule_class, args=args)
