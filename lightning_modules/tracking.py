"""MLflow tracking: the logger with the project's defaults, and the resolved config as artifact.

Runs go to `sqlite:///mlflow.db` in the working directory unless `MLFLOW_TRACKING_URI` or the
config's `trainer.logger.init_args.tracking_uri` names another store or a tracking server. One
experiment per dataset; run names are `<backbone>-<module>-<protocol>`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pytorch_lightning import Callback
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.loggers import MLFlowLogger

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def code_version() -> str | None:
    """The git commit of the code (with `-dirty` for uncommitted changes), if in a checkout."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


class StylebenchMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger with the project's defaults.

    Names left empty are filled in by the CLI before the run starts: the experiment from the
    dataset, the run name from backbone, module and protocol.
    """

    def __init__(
        self,
        experiment_name: str | None = None,
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: dict[str, Any] | None = None,
        log_model: Literal[True, False, "all"] = True,
        run_id: str | None = None,
        artifact_location: str | None = None,
    ) -> None:
        """Args:
        experiment_name: MLflow experiment (default: the dataset's name).
        run_name: MLflow run name (default: `<backbone>-<module>-<protocol>`).
        tracking_uri: tracking store or server (default: $MLFLOW_TRACKING_URI, else
            sqlite:///mlflow.db in the working directory).
        tags: extra run tags.
        log_model: log checkpoints as artifacts: true = the best and last at the end of
            training, "all" = every checkpoint as it is written, false = none.
        run_id: continue logging into this existing run.
        artifact_location: artifact root for a newly created experiment.
        """
        self._names_given = experiment_name is not None, run_name is not None
        super().__init__(
            experiment_name=experiment_name or "stylebench",
            run_name=run_name,
            tracking_uri=tracking_uri or default_tracking_uri(),
            tags=tags,
            log_model=log_model,
            run_id=run_id,
            artifact_location=artifact_location,
        )

    def set_default_names(self, experiment_name: str, run_name: str) -> None:
        """Use these names unless the config gave its own (only before the run exists)."""
        if self._initialized:
            return
        experiment_given, run_given = self._names_given
        if not experiment_given:
            self._experiment_name = experiment_name
        if not run_given and self._run_id is None:
            self._run_name = run_name

    def set_tags(self, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            if value is not None:
                self.experiment.set_tag(self.run_id, key, str(value))

    def recent_runs_named_like_this(self, limit: int = 50) -> tuple[str | None, list[str]]:
        """(experiment id, ids of its runs with this run's name, newest first), read without
        creating a run; (None, []) if the experiment does not exist yet."""
        from mlflow import MlflowClient

        client = MlflowClient(self._tracking_uri)
        experiment = client.get_experiment_by_name(self._experiment_name)
        if experiment is None or self._run_name is None:
            return None, []
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`mlflow.runName` = '{self._run_name}'",
            order_by=["attributes.start_time DESC"],
            max_results=limit,
        )
        return experiment.experiment_id, [run.info.run_id for run in runs]

    def resume(self, run_id: str) -> None:
        """Log into the existing run `run_id` (resuming from its checkpoint), not a new one.

        Points the killed process logged after its last checkpoint are kept, and the resumed
        process's points for the same metric and step are dropped, so each metric's steps stay
        unique and increasing (MLflow cannot delete single metric points).
        """
        if self._initialized and self._run_id != run_id:
            raise RuntimeError(f"the logger already logs into run {self._run_id}, not {run_id}")
        self._run_id = run_id
        client = self.experiment
        self._last_logged_step = {
            key: max((m.step for m in client.get_metric_history(run_id, key)), default=-1)
            for key in client.get_run(run_id).data.metrics
        }
        client.update_run(run_id, status="RUNNING")

    def log_metrics(self, metrics, step: int | None = None) -> None:
        last_logged = getattr(self, "_last_logged_step", None)
        if last_logged:
            metrics = {k: v for k, v in metrics.items() if (step or 0) > last_logged.get(k, -1)}
            if not metrics:
                return
        super().log_metrics(metrics, step)

    def finalize(self, status: str = "success") -> None:
        # Lightning reports a KeyboardInterrupt (Ctrl-C) as "failed", from inside its `except`
        # block (trainer/call.py), so the exception in flight tells the two apart.
        if status == "failed" and isinstance(sys.exc_info()[1], KeyboardInterrupt):
            status = "KILLED"
        super().finalize(status)


#: Where the MLflow run id is kept in a checkpoint (a top-level key, readable without the model).
RUN_ID_KEY = "mlflow_run_id"


def read_checkpoint_run_id(path: str | os.PathLike) -> str | None:
    """The MLflow run id stored in a checkpoint, loaded without executing pickled code."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return checkpoint.get(RUN_ID_KEY)


class MLflowRunIdCallback(Callback):
    """Stores the MLflow run id in every checkpoint, so a resumed run logs into the same run."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                checkpoint[RUN_ID_KEY] = logger.run_id
                return


class BadImagesCallback(Callback):
    """Under `data.on_bad_image: skip`, logs `data/bad_images` (how many distinct images were
    skipped so far) at each epoch end and the list as the artifact `bad_images.txt`."""

    def _report(self, trainer, pl_module) -> None:
        datamodule = trainer.datamodule
        if getattr(datamodule, "on_bad_image", "error") != "skip":
            return
        paths = datamodule.bad_images()
        pl_module.log("data/bad_images", float(len(paths)))
        if paths and trainer.is_global_zero:
            for logger in trainer.loggers:
                if isinstance(logger, MLFlowLogger):
                    text = "\n".join(paths) + "\n"
                    logger.experiment.log_text(logger.run_id, text, "bad_images.txt")

    on_train_epoch_end = _report


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

    def save_config(self, trainer, pl_module, stage: str) -> None:
        logger = trainer.logger
        if not isinstance(logger, MLFlowLogger):
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
