"""The LightningCLI every `python -m experiments.<dataset>` entry point runs.

YAML config -> LightningCLI -> DataModule (domains, splits, loaders) and `MultiDomainClassifier`
(backbone + per-domain heads) -> Trainer (strategy, devices) -> MLflow. The only module that
imports both the data side (`datamodules`) and the model side: it wires them together.
`ParsedConfig` reads a training config exactly as training does, for the tools beside it
(`experiments.check_data`, `experiments.dtd_partitions`): the same `--config` stacking, overrides
and defaults, building only what they need.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI

from datamodules.base import MultiDomainDataModule
from datamodules.data.preflight import require_valid_inputs
from lightning_modules.callbacks.artifacts import EvaluationArtifacts
from lightning_modules.callbacks.faults import FiniteStateGuard, GracefulStop
from lightning_modules.callbacks.resume import ExactResume
from lightning_modules.callbacks.tracking import (
    BadImagesCallback,
    MLflowRunIdCallback,
    MLflowSaveConfigCallback,
    RunWriterLock,
)
from lightning_modules.classifier import MultiDomainClassifier
from lightning_modules.names import MONITOR
from lightning_modules.preflight import (
    MOVED_CLASS_PATHS,
    MOVED_SETTINGS,
    check_ckpt_path,
    check_moved_class_paths,
    check_settings,
    check_writable_outputs,
    checkpoint_callbacks,
)
from lightning_modules.tracking import (
    CONFIG_HASH_TAG,
    REPLACED_BY_TAG,
    RunChoice,
    StylebenchMLFlowLogger,
    WriterLock,
    code_version,
    config_hash,
    require_free,
    resolve_run,
    sqlite_store_path,
)

__all__ = [
    "MOVED_CLASS_PATHS",
    "MOVED_SETTINGS",
    "ParsedConfig",
    "StylebenchCLI",
    "check_moved_class_paths",
    "check_settings",
    "checkpoint_callbacks",
    "run_cli",
]

# DataModule facts the model is built from: the data decides, the config says it once.
LINKED_FROM_DATA = {
    "num_classes": "num_classes",
    "domain_names": "domain_names",
    "trained_domains": "trained_domains",
    "class_names": "class_names",
    "image_size": "image_size",
}


class StylebenchCLI(LightningCLI):
    """LightningCLI with MLflow logging, checkpointing on `val/acc_mean` and data->model links.

    The MLflow logger in the config is built by jsonargparse before the DataModule and the model
    exist, and touches nothing until it is used; `instantiate_trainer` names that same logger
    after them (experiment = dataset, run = `<backbone>-<module>-<protocol>[-<subcommand>]`)
    and, for `fit --ckpt_path`, gives it the run `resolve_run` chose to continue.
    """

    def __init__(self, datamodule_class=MultiDomainDataModule, args=None, run: bool = True):
        #: The run id `fit --ckpt_path` continues (None: a new run).
        self.resumed_run_id: str | None = None
        #: What `fit --ckpt_path` chose (`resolve_run`); None without `--ckpt_path`.
        self.run_choice: RunChoice | None = None
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
        # Figures and per-class tables per run in MLflow (`--evaluation_artifacts.*`).
        parser.add_lightning_class_args(EvaluationArtifacts, "evaluation_artifacts")
        parser.set_defaults(
            {
                "checkpoint.monitor": MONITOR,
                "checkpoint.mode": "max",
                # Here: also keep an always-latest `last.ckpt` (see `checkpoint_callbacks`).
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-epoch{epoch:03d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        for source, target in LINKED_FROM_DATA.items():
            parser.link_arguments(
                f"data.{source}", f"model.init_args.{target}", apply_on="instantiate"
            )

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """LightningCLI's parsing, after failing early on moved class paths in the arguments."""
        if args is None or isinstance(args, Sequence):
            check_moved_class_paths([str(a) for a in (sys.argv[1:] if args is None else args)])
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """Keep the command's own config when `fit --ckpt_path <file>` resumes.

        A private LightningCLI hook, overridden because it has no public switch: given a
        checkpoint file it re-parses the model from the checkpoint's hyperparameters, which
        leave out the optimizer and scheduler (`save_hyperparameters(ignore=...)`), so they
        fall back to their defaults (SGD) and loading the saved optimizer state fails
        (`KeyError: 'momentum'` for AdamW). A resumed fit is the same command run again, so its
        config is the one to use. `validate`/`test`/`predict` keep Lightning's behaviour.
        tests/lightning_modules/test_cli.py checks the hook still exists.
        """
        if self.config.get("subcommand") == "fit":
            return
        super()._parse_ckpt_path()

    def _section(self, config: Namespace) -> Namespace:
        """The subcommand's part of a config (the whole config without a subcommand)."""
        return config[self.subcommand] if self.subcommand else config

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Name the MLflow logger after the data and the model, set up the checkpoint callbacks
        and the fault callbacks, then build the trainer."""
        config, built = self._section(self.config), self._section(self.config_init)
        # Before any MLflow run exists: a bad setting leaves no FAILED run behind.
        check_settings(self.model, self.datamodule)
        # Every list and label file read whole, and symlink loops: all problems at once.
        require_valid_inputs(self.datamodule)
        check_ckpt_path(built.get("ckpt_path"))
        if self.subcommand == "fit":
            self._check_outputs(config, built["trainer"]["logger"])
        self._name_loggers(built["trainer"]["logger"])
        best, latest = checkpoint_callbacks(config["checkpoint"].as_dict())
        built["checkpoint"] = best
        present = {type(callback) for callback in built["trainer"]["callbacks"] or []}
        always_on = (
            MLflowRunIdCallback,
            RunWriterLock,
            ExactResume,
            BadImagesCallback,
            FiniteStateGuard,
            GracefulStop,
        )
        always = [c() for c in always_on if c not in present]
        # The CLI's persistent callbacks come after the configured ones, so the monitored
        # checkpoint stays `trainer.checkpoint_callback` (what `ckpt_path="best"` reads).
        self.trainer_defaults = {
            **self.trainer_defaults,
            "callbacks": [*always, *([latest] if latest else [])],
        }
        return super().instantiate_trainer(**kwargs)

    def _check_outputs(self, config: Namespace, loggers: Any) -> None:
        """Before the run starts: the folders a fit writes can be written, and a fixed
        `checkpoint.dirpath` is not being written by a live process."""
        mlflow_loggers = [
            logger
            for logger in (loggers if isinstance(loggers, list) else [loggers])
            if isinstance(logger, StylebenchMLFlowLogger)
        ]
        logger = mlflow_loggers[0] if mlflow_loggers else None
        local_store = logger is not None and sqlite_store_path(logger.tracking_uri) is not None
        artifacts = (logger.artifact_location or "mlruns") if local_store else None
        dirpath = config["checkpoint"]["dirpath"]
        check_writable_outputs(
            config["trainer"]["default_root_dir"],
            dirpath,
            logger.save_dir if logger is not None else None,
            None if artifacts is None or "://" in artifacts else artifacts,
        )
        if dirpath:
            require_free(dirpath, f"checkpoint.dirpath {dirpath}")

    def run_name(self) -> str:
        """`<backbone>-<module>[+<method>]-<protocol>`, and `-<subcommand>` except for `fit`.

        A module variant (non-default `recalibration_kwargs`) is named `<module>[<options>]`,
        e.g. `resnet50-srm[pooling=avg]-multi_domain`; a training method other than ERM is
        added the same way, e.g. `resnet50-srm+dann[weight=0.5]-Art_to_Clipart`.
        """
        hparams = self.model.hparams
        name = f"{hparams.backbone}-{self.model.variant_name()}-{self.datamodule.protocol}"
        return name if self.subcommand in (None, "fit") else f"{name}-{self.subcommand}"

    def _name_loggers(self, loggers: Any) -> None:
        """Name the trainer's StylebenchMLFlowLogger(s) (see `_name_logger`)."""
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            if isinstance(logger, StylebenchMLFlowLogger):
                self._name_logger(logger)

    def _name_logger(self, logger: StylebenchMLFlowLogger) -> None:
        """Give the configured logger, before its first use, the names the config left empty
        (experiment = dataset, run = `run_name()`) and, for `fit --ckpt_path`, the run to
        continue. The logger is not rebuilt: the command has one."""
        logger.set_run(
            experiment_name=logger.experiment_name or self.datamodule.dataset_name,
            run_name=logger.run_name or self.run_name(),
        )
        if self.subcommand == "fit" and logger.requested_run_id is None:
            choice = self._resolve_run(logger)
            self.run_choice = choice
            if choice is not None and choice.ckpt_path is not None:
                # Taken now, before the run is reopened: a second command that chose the same
                # run a moment later is refused here, not after both have started writing.
                WriterLock(Path(choice.ckpt_path).parent).acquire(choice.run_id)
            if choice is not None and choice.run_id is not None:
                self.resumed_run_id = choice.run_id
                logger.set_run(run_id=choice.run_id)

    def _resolve_run(self, logger: StylebenchMLFlowLogger) -> RunChoice | None:
        """`fit --ckpt_path last|<file>`: the run and checkpoint to continue (`resolve_run`),
        said on stdout; `ckpt_path` becomes the checkpoint chosen (None: train afresh).

        Checkpoints live in `<default_root_dir>/<experiment id>/<run id>/checkpoints`, so "last"
        cannot be found before the run id is known: it is resolved here, before the trainer
        exists, among the runs of this run name and config (or in `checkpoint.dirpath`).
        """
        built = self._section(self.config_init)
        if not built.get("ckpt_path"):
            return None
        config = self._section(self.config)
        choice = resolve_run(
            built["ckpt_path"],
            tracking_uri=logger.tracking_uri,
            experiment_name=logger.experiment_name,
            run_name=logger.run_name,
            config_hash=self.config_hash(),
            checkpoint_dir=config["checkpoint"]["dirpath"],
            checkpoint_root=(
                logger.save_dir or config["trainer"]["default_root_dir"] or os.getcwd()
            ),
        )
        for line in choice.report():
            print(line)
        built["ckpt_path"] = choice.ckpt_path
        return choice

    def config_hash(self) -> str:
        """`config_hash` of this command's resolved config (`lightning_modules.tracking`)."""
        return config_hash(self._section(self.config))

    def _describe_run(self) -> None:
        """Tag the MLflow run (and mark a resumed one running) before anything is logged."""
        if not self.trainer.is_global_zero:
            return
        data, model = self.datamodule, self.model
        for logger in self.trainer.loggers:
            if not isinstance(logger, StylebenchMLFlowLogger):
                continue
            logger.tag_experiment_kind()
            if self.resumed_run_id is not None:
                logger.resume_run()
            self._mark_replaced(logger)
            logger.set_tags(
                {
                    "dataset": data.dataset_name,
                    "protocol": data.protocol,
                    "backbone": model.hparams.backbone,
                    "module": model.hparams.recalibration,
                    # The variant's options, sorted `key=value` ('' for the defaults).
                    "module_options": model.module_options,
                    "method": model.hparams.method,
                    # The method's options, sorted `key=value` ('' for the defaults).
                    "method_options": model.method_options,
                    "weights": model.hparams.weights or "scratch",
                    "seed": self.config[self.subcommand].get("seed_everything"),
                    "stage": self.subcommand,
                    "code_version": code_version(),
                    CONFIG_HASH_TAG: self.config_hash(),
                }
            )

    def _mark_replaced(self, logger: StylebenchMLFlowLogger) -> None:
        """End the runs `resolve_run` found abandoned (RUNNING, their writer dead) KILLED,
        tagged with the run that replaces them (`REPLACED_BY_TAG`)."""
        choice = self.run_choice
        for old in choice.replaced if choice is not None else ():
            logger.experiment.set_tag(old, REPLACED_BY_TAG, logger.run_id)
            logger.experiment.set_terminated(old, "KILLED")
            print(f"MLflow run {old} (its process ended) is marked KILLED, replaced by this run")

    before_fit = before_validate = before_test = before_predict = _describe_run


class ParsedConfig(StylebenchCLI):
    """`StylebenchCLI` that parses its arguments into `self.config` and instantiates nothing.

    Runs without a subcommand (`run=False`): the arguments are what follows `fit` on a training
    command line (`--config`, overrides). Parse errors raise instead of exiting.

    Args:
        datamodule_class: the DataModule base class the entry point accepts.
        args: the arguments; None reads `sys.argv`, as LightningCLI does.
        add_arguments: adds the tool's own options to the parser, so one parser reads the
            whole command line (`--workers` of the data check, say).
        prog: the command shown in `--help` and in errors.
        description: the tool's one-line description for `--help`.
    """

    def __init__(
        self,
        datamodule_class: type = MultiDomainDataModule,
        args: Sequence[str] | None = None,
        add_arguments: Callable[[LightningArgumentParser], None] | None = None,
        prog: str | None = None,
        description: str | None = None,
    ) -> None:
        self._add_tool_arguments = add_arguments
        self._parser_texts = {"prog": prog, "description": description}
        super().__init__(
            datamodule_class=datamodule_class,
            args=None if args is None else list(args),
            run=False,
        )

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        texts = {key: text for key, text in self._parser_texts.items() if text is not None}
        # Raise jsonargparse's ArgumentError (the caller reports it) rather than exit.
        return super().init_parser(exit_on_error=False, **texts, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        if self._add_tool_arguments is not None:
            self._add_tool_arguments(parser)

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        super().parse_arguments(parser, args)
        # LightningCLI seeds every RNG between parsing and instantiation; reading a config
        # should not, so the seed is hidden from it here and put back in instantiate_classes.
        self._config_seed = self.config.get("seed_everything")
        self.config.seed_everything = False

    def instantiate_classes(self) -> None:
        """Nothing is built on parsing (no model, trainer or MLflow logger)."""
        self.config.seed_everything = self._config_seed

    def instantiate_data(self) -> MultiDomainDataModule:
        """The DataModule of the parsed config, and nothing else.

        The parser instantiates a namespace holding only the `data` entry: components absent
        from it (model, trainer logger and callbacks) are skipped, so no model is built and no
        ImageNet weights are needed.
        """
        if self.config.get("data") is None:
            raise ValueError("the config has no `data` section")
        return self.parser.instantiate(
            Namespace(data=self.config.data), instantiate_groups=False
        ).data


def run_cli(datamodule_class=MultiDomainDataModule, args=None) -> StylebenchCLI:
    """Entry point shared by the experiments: `main(args=None)` calls this."""
    return StylebenchCLI(datamodule_class=datamodule_class, args=args)
