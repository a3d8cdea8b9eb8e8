"""MLflow tracking: the logger with the project's defaults, and how to find and resume runs.

Runs go to `sqlite:///mlflow.db` in the working directory unless `MLFLOW_TRACKING_URI` or the
config's `trainer.logger.init_args.tracking_uri` names another store or a tracking server. One
experiment per dataset; run names are `<backbone>-<module>-<protocol>`. The CLI
(`lightning_modules/cli.py`) builds the logger with those names; the callbacks that write to the
run (`lightning_modules/callbacks/`) find it with `find_mlflow_logger`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import MLFlowLogger

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: Experiment of a logger built outside the CLI without a name (the CLI names it by dataset).
FALLBACK_EXPERIMENT = "stylebench"
#: Where the MLflow run id is kept in a checkpoint (a top-level key, readable without the model).
RUN_ID_KEY = "mlflow_run_id"


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else `sqlite:///mlflow.db` in the working directory."""
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


def find_mlflow_logger(trainer: Trainer | None) -> MLFlowLogger | None:
    """The trainer's first MLflow logger, or None (no trainer, or no MLflow logger)."""
    if trainer is None:
        return None
    return next((logger for logger in trainer.loggers if isinstance(logger, MLFlowLogger)), None)


def read_checkpoint_run_id(path: str | os.PathLike) -> str | None:
    """The MLflow run id stored in a checkpoint, loaded without executing pickled code."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return checkpoint.get(RUN_ID_KEY)


def recent_run_ids(
    tracking_uri: str, experiment_name: str, run_name: str, limit: int = 50
) -> tuple[str | None, list[str]]:
    """(experiment id, ids of its runs named `run_name`, newest first), read without creating
    anything; (None, []) when the experiment does not exist yet."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None, []
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.runName` = '{run_name}'",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    return experiment.experiment_id, [run.info.run_id for run in runs]


class StylebenchMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger with the project's defaults.

    Names left empty are filled in by the CLI, which builds the logger once the DataModule and
    the model exist: the experiment from the dataset, the run name from backbone, module and
    protocol, and `run_id` from the checkpoint a `fit --ckpt_path` resumes.
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
        super().__init__(
            experiment_name=experiment_name or FALLBACK_EXPERIMENT,
            run_name=run_name,
            tracking_uri=tracking_uri or default_tracking_uri(),
            tags=tags,
            log_model=log_model,
            run_id=run_id,
            artifact_location=artifact_location,
        )
        # Own copies: MLFlowLogger keeps these only as private attributes.
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.log_model = log_model
        self.requested_run_id = run_id
        # metric -> last step the run held when it was resumed (see `resume_run`).
        self._resumed_steps: dict[str, int] = {}
        # state key -> checkpoint callback whose files `finalize` uploads (log_model: true).
        self._final_checkpoints: dict[str, ModelCheckpoint] = {}
        # path -> modification time of the checkpoint files uploaded so far.
        self._uploaded: dict[str, float] = {}

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set run tags (values as strings; None values are skipped)."""
        for key, value in tags.items():
            if value is not None:
                self.experiment.set_tag(self.run_id, key, str(value))

    def resume_run(self) -> None:
        """Continue the run given as `run_id` (resuming from its checkpoint), on rank zero.

        Points the killed process logged after its last checkpoint are kept, and the resumed
        process's points for the same metric and step are dropped, so each metric's steps stay
        unique and increasing (MLflow cannot delete single metric points).
        """
        if self.requested_run_id is None:
            raise ValueError("resume_run needs the logger to be built with the run_id to resume")
        client, run_id = self.experiment, self.run_id
        self._resumed_steps = {
            key: max((m.step for m in client.get_metric_history(run_id, key)), default=-1)
            for key in client.get_run(run_id).data.metrics
        }
        client.update_run(run_id, status="RUNNING")

    def log_metrics(self, metrics, step: int | None = None) -> None:
        if self._resumed_steps:
            last = self._resumed_steps
            metrics = {k: v for k, v in metrics.items() if (step or 0) > last.get(k, -1)}
            if not metrics:
                return
        super().log_metrics(metrics, step)

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        if self.log_model is True and checkpoint_callback.save_top_k != -1:
            # MLFlowLogger remembers only the checkpoint callback that saved last and uploads its
            # files at the end; the CLI has two (the monitored best and the always-latest
            # `last.ckpt`), so each is remembered here and its files uploaded in `finalize`.
            self._final_checkpoints[checkpoint_callback.state_key] = checkpoint_callback
            return
        super().after_save_checkpoint(checkpoint_callback)

    def finalize(self, status: str = "success") -> None:
        # Lightning reports a KeyboardInterrupt (Ctrl-C) as "failed", from inside its `except`
        # block (trainer/call.py), so the exception in flight tells the two apart.
        if status == "failed" and isinstance(sys.exc_info()[1], KeyboardInterrupt):
            status = "KILLED"
        # Checkpoint callbacks are remembered on global rank zero only, where the run exists.
        if self._final_checkpoints:
            self._upload_final_checkpoints()
        super().finalize(status)

    def _upload_final_checkpoints(self) -> None:
        """Upload the remembered callbacks' best, top-k and last files not uploaded yet (or
        changed since), each into an artifact folder named after the file, as MLFlowLogger does."""
        paths = set()
        for callback in self._final_checkpoints.values():
            paths |= {callback.best_model_path, callback.last_model_path, *callback.best_k_models}
        for path in sorted(p for p in paths if p and Path(p).is_file()):
            modified = Path(path).stat().st_mtime
            if self._uploaded.get(path) != modified:
                self.experiment.log_artifact(self.run_id, path, Path(path).stem)
                self._uploaded[path] = modified
