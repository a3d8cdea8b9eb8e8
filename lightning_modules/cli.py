"""The LightningCLI every `python -m experiments.<dataset>` entry point runs.

YAML config -> LightningCLI -> DataModule (domains, splits, loaders) and `MultiDomainClassifier`
(backbone + per-domain heads) -> Trainer (strategy, devices) -> MLflow.
"""

from __future__ import annotations

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from datamodules.base import MultiDomainDataModule
from lightning_modules.classifier import MultiDomainClassifier
from lightning_modules.tracking import (
    MLflowSaveConfigCallback,
    StylebenchMLFlowLogger,
    code_version,
)

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
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
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
        backbone, module = model.hparams.backbone, model.hparams.recalibration
        run_name = f"{backbone}-{module}-{data.protocol}"
        if self.subcommand != "fit":
            run_name += f"-{self.subcommand}"
        for logger in self.trainer.loggers:
            if isinstance(logger, StylebenchMLFlowLogger):
                logger.set_default_names(data.dataset_name, run_name)
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

    before_fit = before_validate = before_test = before_predict = _describe_run


def run_cli(datamodule_class=MultiDomainDataModule, args=None) -> StylebenchCLI:
    """Entry point shared by the experiments: `main(args=None)` calls this."""
    return StylebenchCLI(datamodule_class=datamodule_class, args=args)
