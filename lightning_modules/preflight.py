"""Checks a command runs before any MLflow run exists, so that a bad setting fails in seconds
with one line naming the setting and the fix, and leaves no FAILED run behind: optimizer and
batch-size settings (`check_settings`), moved class paths and settings
(`check_moved_class_paths`), output folders that cannot be written (`check_writable_outputs`),
and a `--ckpt_path` file that does not exist (`check_ckpt_path`). The CLI
(`lightning_modules/cli.py`) runs them; it also builds the two checkpoint callbacks
(`checkpoint_callbacks`).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytorch_lightning.callbacks import ModelCheckpoint

#: Class paths that configs used to name -> where the class is now.
MOVED_CLASS_PATHS = {
    "lightning_modules.shape_bias.ShapeBiasCallback": (
        "lightning_modules.callbacks.shape_bias.ShapeBiasCallback"
    ),
}


def check_settings(model: Any, datamodule: Any) -> None:
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


#: `--ckpt_path` values that are no file: Lightning's own choices.
CKPT_PATH_KEYWORDS = ("best", "last", "hpc", "registry")


def check_ckpt_path(ckpt_path: str | os.PathLike | None) -> None:
    """Fail when `--ckpt_path` names a file that does not exist (Lightning finds out only once
    the run has started, and leaves it FAILED)."""
    if ckpt_path is None:
        return
    text = str(ckpt_path)
    if text in CKPT_PATH_KEYWORDS or text.startswith("registry:") or "://" in text:
        return
    if not Path(text).is_file():
        raise ValueError(
            f"--ckpt_path {text}: no such checkpoint file; give an existing one (e.g. "
            "outputs/<experiment id>/<run id>/checkpoints/last.ckpt), or `last` to continue "
            "the newest unfinished run of this config"
        )


def check_writable(folder: str | os.PathLike, setting: str) -> None:
    """Fail unless `folder` can be created and written into (a folder is made and removed in
    it, as the checkpoint callbacks will do): `ValueError` naming the setting and the fix."""
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=".stylebench-write-check-", dir=path))
    except OSError as error:
        reason = error.strerror or str(error)
        where = f": {error.filename}" if error.filename and str(error.filename) != str(path) else ""
        raise ValueError(
            f"{setting}={str(folder)!r} cannot be written ({reason}{where}); set {setting} to a "
            "folder this user can write (e.g. --" + setting + "=$HOME/stylebench-outputs), or "
            "make this one writable"
        ) from None


def check_writable_outputs(
    default_root_dir: str | os.PathLike | None,
    checkpoint_dirpath: str | os.PathLike | None,
    logger_save_dir: str | None = None,
    local_artifacts: str | os.PathLike | None = None,
) -> None:
    """Check the folders a fit writes before it starts (otherwise the first checkpoint, after
    a whole epoch, is where an unwritable folder shows): the checkpoint folder
    (`checkpoint.dirpath`, else under the logger's `save_dir` or `trainer.default_root_dir`)
    and, for a local store, the folder MLflow keeps artifacts in."""
    if checkpoint_dirpath:
        check_writable(checkpoint_dirpath, "checkpoint.dirpath")
    elif logger_save_dir:
        check_writable(logger_save_dir, "trainer.logger.init_args.tracking_uri")
    else:
        check_writable(default_root_dir or os.getcwd(), "trainer.default_root_dir")
    if local_artifacts is not None:
        check_writable(local_artifacts, "trainer.logger.init_args.artifact_location")
