"""MLflow tracking: the logger with the project's defaults, and the resolved config as artifact.

Runs go to `sqlite:///mlflow.db` in the working directory unless `MLFLOW_TRACKING_URI` or the
config's `trainer.logger.init_args.tracking_uri` names another store or a tracking server. One
experiment per dataset; run names are `<backbone>-<module>-<protocol>`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Literal

import yaml
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
        logger.experiment.log_text(logger.run_id, text, "config.yaml")
        params = flatten_config(yaml.safe_load(text))
        # Lists of callbacks and the like are unreadable as params; the artifact has them.
        params = {k: v for k, v in params.items() if not isinstance(v, list) or len(str(v)) < 250}
        logger.log_hyperparams(params)
