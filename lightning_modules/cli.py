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
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI

from datamodules.base import MultiDomainDataModule
from lightning_modules.callbacks.artifacts import EvaluationArtifacts
from lightning_modules.callbacks.faults import FiniteStateGuard, GracefulStop
from lightning_modules.callbacks.tracking import (
    BadImagesCallback,
    MLflowRunIdCallback,
    MLflowSaveConfigCallback,
)
from lightning_modules.classifier import MultiDomainClassifier
from lightning_modules.names import MONITOR
from lightning_modules.tracking import (
    CONFIG_HASH_TAG,
    RunChoice,
    StylebenchMLFlowLogger,
    code_version,
    config_hash,
    resolve_run,
)

#: Class paths that configs used to name -> where the class is now.
MOVED_CLASS_PATHS = {
    "lightning_modules.shape_bias.ShapeBiasCallback": (
        "lightning_modules.callbacks.shape_bias.ShapeBiasCallback"
    ),
}

# DataModule facts the model is built from: the data decides, the config says it once.
LINKED_FROM_DATA = {
    "num_classes": "num_classes",
    "domain_names": "domain_names",
    "trained_domains": "trained_domains",
    "class_names": "class_names",
    "image_size": "image_size",
}


def check_settings(model: MultiDomainClassifier, datamodule: MultiDomainDataModule) -> None:
    """Fail on settings torch would reject only once training has started (after the MLflow run
    exists): the optimizer is built once on the model's parameter groups, batch sizes checked."""
    for name in ("batch_size", "eval_batch_size"):
        value = getattr(datamodule, name, None)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(
                f"data.init_args.{name} is {value!r}; it must be a positive whole number"
            )
    method = getattr(model, "method", None)
    if method is not None and method.needs_target_domains and not datamodule.target_domains:
        raise ValueError(
            f"model.init_args.method {model.hparams.method!r} adapts to unlabelled target "
            "domains, and the data has none; set data.init_args.target_domains (e.g. "
            "configs/officehome/art_to_clipart.yaml) or choose a method without targets"
        )
    factory = getattr(model, "optimizer_factory", None)
    if factory is None:
        return
    try:
        optimizer = factory(model.parameter_groups())
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"model.init_args.optimizer ({type(error).__name__} from the optimizer): {error}; "
            "fix model.init_args.optimizer.init_args"
        ) from None
    for group in optimizer.param_groups:
        lr = group["lr"] * group.get("lr_multiplier", 1.0)
        if lr <= 0:
            raise ValueError(
                f"learning rate of parameter group {group.get('name')!r} is {lr}; "
                "model.optimizer.init_args.lr (and backbone_lr_multiplier) must be positive"
            )


#: Model settings that were replaced -> what to write instead.
MOVED_SETTINGS = {
    "adaptation": "model.init_args.method (e.g. `method: dann`)",
    "adaptation_weight": "model.init_args.method_kwargs (`weight` of method dann)",
    "discriminator_hidden_features": (
        "model.init_args.method_kwargs (`hidden_features` of method dann)"
    ),
}


def check_moved_class_paths(args: Sequence[str]) -> None:
    """Fail with the new name when a `--config` file or a command-line value names a class
    that has moved (`MOVED_CLASS_PATHS`) or a model setting that was replaced
    (`MOVED_SETTINGS`), instead of jsonargparse's import or unknown-key error."""
    patterns = {
        old: (re.compile(rf"\b{re.escape(old)}\b"), f"which has moved to {new}; replace it")
        for old, new in MOVED_CLASS_PATHS.items()
    }
    for old, new in MOVED_SETTINGS.items():
        # A YAML key on its own line, or a command-line `--model.init_args.<old>`.
        pattern = re.compile(rf"(^\s*{old}\s*:|--model\.init_args\.{old}\b)", re.MULTILINE)
        patterns[old] = (pattern, f"a setting that was replaced; use {new}")
    sources: list[tuple[str, str]] = []
    for index, arg in enumerate(args):
        value = arg.removeprefix("--config=") if arg.startswith("--config=") else None
        if value is None and index and args[index - 1] == "--config":
            value = arg
        if value is not None and Path(value).is_file():
            sources.append((f"config file {value}", Path(value).read_text()))
        else:
            sources.append((f"command-line value {arg!r}", arg))
    for where, text in sources:
        for old, (pattern, fix) in patterns.items():
            if pattern.search(text):
                raise ValueError(f"{where} names {old}, {fix}")


def checkpoint_callbacks(args: dict[str, Any]) -> tuple[ModelCheckpoint, ModelCheckpoint | None]:
    """The checkpoint callbacks of the `checkpoint.*` config: (monitored, always-latest).

    Lightning's `save_last` writes `last.ckpt` only in a step where a top-k checkpoint is written:
    once the monitored metric stops improving, `last.ckpt` would stay at the last improvement and
    `--ckpt_path last` would repeat epochs. So with `save_last` and a monitor, the monitored
    callback keeps only the best, and a second, unmonitored one keeps `last.ckpt` (top-1 of
    "latest") in the same folder, at the same cadence.
    """
    if not args["save_last"] or args["monitor"] is None:
        # Without a monitor every save is a top-k save, so Lightning's `save_last` is current.
        return ModelCheckpoint(**args), None
    best = ModelCheckpoint(**{**args, "save_last": False})
    latest = ModelCheckpoint(
        dirpath=args["dirpath"],
        filename=ModelCheckpoint.CHECKPOINT_NAME_LAST,
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
        verbose=args["verbose"],
        save_weights_only=args["save_weights_only"],
        every_n_train_steps=args["every_n_train_steps"],
        train_time_interval=args["train_time_interval"],
        every_n_epochs=args["every_n_epochs"],
        save_on_train_epoch_end=args["save_on_train_epoch_end"],
    )
    return best, latest


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
        self._name_loggers(built["trainer"]["logger"])
        best, latest = checkpoint_callbacks(config["checkpoint"].as_dict())
        built["checkpoint"] = best
        present = {type(callback) for callback in built["trainer"]["callbacks"] or []}
        always_on = (MLflowRunIdCallback, BadImagesCallback, FiniteStateGuard, GracefulStop)
        always = [c() for c in always_on if c not in present]
        # The CLI's persistent callbacks come after the configured ones, so the monitored
        # checkpoint stays `trainer.checkpoint_callback` (what `ckpt_path="best"` reads).
        self.trainer_defaults = {
            **self.trainer_defaults,
            "callbacks": [*always, *([latest] if latest else [])],
        }
        return super().instantiate_trainer(**kwargs)

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
