"""Evaluation artifacts in MLflow: per-domain accuracy chart, confusion matrices, per-class CSV,
and the cross-domain heat map of the style-robustness evaluation.

`EvaluationArtifacts` (a Lightning callback, registered by the CLI) logs them for the best
validation epoch at the end of `fit`, for each `validate`, and for each `test`, under
`evaluation/<stage>/` in the run, and the cross-domain matrix of every pass that computed one
under `style_robustness/`. The figures and tables are drawn by `charts.py`; every figure of a
run is logged by a callback, none by the LightningModule.
"""

from __future__ import annotations

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn

from lightning_modules.callbacks.charts import (
    accuracy_bar_chart,
    confusion_matrix_figure,
    cross_domain_figure,
    per_class_accuracy_csv,
)
from lightning_modules.callbacks.contracts import EvaluatedModel, require
from lightning_modules.metrics import accuracy_from_confusion
from lightning_modules.names import (
    ACC_HELD_OUT_MEAN,
    ACC_MEAN,
    ACC_WORST,
    LOSS,
    STYLE_ACC,
    TEST,
    VAL,
    metric_safe_name,
)
from lightning_modules.tracking import find_mlflow_logger

NUM_PARAMETERS_KEY = "model/num_parameters"
# Metrics copied into `summary.json` besides per-domain accuracy, when the run logged them
# (the style metrics come from the style-robustness evaluation, absent in plain runs).
SUMMARY_PREFIXES = (ACC_MEAN, ACC_WORST, ACC_HELD_OUT_MEAN, LOSS, "style_")
STYLE_ACC_PREFIX = f"{STYLE_ACC}/"
#: Folder of the cross-domain heat maps (`.png`) and matrices (`.json`) in the run.
CROSS_DOMAIN_FOLDER = "style_robustness"


def checkpoint_best(trainer: Trainer) -> tuple[str, float | None] | None:
    """(best path, best score) of the trainer's monitored ModelCheckpoint, None without one."""
    checkpoint = trainer.checkpoint_callback
    if not isinstance(checkpoint, ModelCheckpoint) or checkpoint.monitor is None:
        return None
    score = checkpoint.best_model_score
    return checkpoint.best_model_path, None if score is None else float(score)


class EvaluationArtifacts(Callback):
    """Logs evaluation figures and tables to the MLflow run (global rank zero only).

    - `fit`: the results of the best validation epoch, logged once when fitting ends, so a
      long run does not upload a set of figures per epoch. The best epoch is the one the
      trainer's monitored checkpoint callback keeps as best (without one, the last).
    - `validate` / `test`: the results of that evaluation, logged when it ends.

    Under `evaluation/<stage>/`: `domain_accuracy.png`, `confusion/<domain>.png`,
    `per_class_accuracy.csv`, `summary.json` (per-domain accuracy, mean, worst and any
    `<stage>/style_*` metrics), and `style_robustness.png` when style metrics were logged.
    The parameter count is logged as the `model/num_parameters` param when a run starts.
    Needs a model with `evaluation_results` and `class_names` (`EvaluatedModel`).

    The cross-domain matrix of a model with `style_robustness` (`StyleRobustness`), for each
    pass that evaluated the style-shifted set, goes under `style_robustness/` as a heat map and
    a table: `val_cross_domain_epochNNN.png|json` per validated epoch (a history),
    `test_cross_domain.png|json` per test.
    """

    def __init__(self, confusion_matrices: bool = True) -> None:
        """Settings (each one also a command-line option).

        Args:
            confusion_matrices: draw a confusion matrix per domain (the slowest artifact).
        """
        self.confusion_matrices = confusion_matrices
        self._best: dict | None = None
        # The last validation of `fit`, until the checkpoint callback has judged it (it runs
        # after every other callback), and the checkpoint's best before that judgement.
        self._pending: dict | None = None
        self._best_before: tuple[str, float | None] | None = None
        # stage -> the model's style results (`StyleRobustness.results[stage]`) seen last: a
        # pass without the style-shifted set leaves the previous ones there, not logged again.
        self._cross_domain_seen: dict[str, dict] = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        require(pl_module, EvaluatedModel, "EvaluationArtifacts")

    def _log_parameter_count(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = find_mlflow_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        count = sum(p.numel() for p in pl_module.parameters())
        # MLflow accepts re-logging a param with the same value (fit then test in one run).
        logger.experiment.log_param(logger.run_id, NUM_PARAMETERS_KEY, count)

    # Logged when a stage starts, not in `setup`: the config callback's `setup` reads a run
    # that already has params as a resumed one.
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._best = self._pending = None
        self._log_parameter_count(trainer, pl_module)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._log_parameter_count(trainer, pl_module)
        else:
            self._judge_pending(trainer)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_parameter_count(trainer, pl_module)

    def on_validation_end(self, trainer: Trainer, pl_module: EvaluatedModel) -> None:
        self._log_cross_domain(trainer, pl_module, VAL)
        if trainer.sanity_checking or VAL not in pl_module.evaluation_results:
            return
        snapshot = self._snapshot(trainer, pl_module, VAL)
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._log(trainer, pl_module, VAL, snapshot)
        else:
            self._pending, self._best_before = snapshot, checkpoint_best(trainer)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._judge_pending(trainer)
        if self._best is not None:
            self._log(trainer, pl_module, VAL, self._best)

    def on_test_end(self, trainer: Trainer, pl_module: EvaluatedModel) -> None:
        self._log_cross_domain(trainer, pl_module, TEST)
        if TEST in pl_module.evaluation_results:
            self._log(trainer, pl_module, TEST, self._snapshot(trainer, pl_module, TEST))

    def _log_cross_domain(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """The cross-domain matrix of the pass that just ended, if it computed one (see the
        class docstring); nothing in the sanity check, off global rank zero, without an MLflow
        logger, or with a single domain."""
        style = getattr(pl_module, "style_robustness", None)
        results = getattr(style, "results", {}).get(stage)
        if results is None or results is self._cross_domain_seen.get(stage):
            return
        self._cross_domain_seen[stage] = results
        logger = find_mlflow_logger(trainer)
        if trainer.sanity_checking or logger is None or not trainer.is_global_zero:
            return
        if len(style.domain_names) < 2:
            return
        matrix = results["cross_domain"]
        suffix = "" if stage == TEST else f"_epoch{trainer.current_epoch:03d}"
        path = f"{CROSS_DOMAIN_FOLDER}/{stage}_cross_domain{suffix}"
        title = f"{stage}: head accuracy per domain"
        client, run_id = logger.experiment, logger.run_id
        figure = cross_domain_figure(matrix, style.trained_domains, style.domain_names, title)
        client.log_figure(run_id, figure, f"{path}.png")
        table = {
            "heads": list(style.trained_domains),
            "domains": list(style.domain_names),
            # NaN (a domain without samples) is not JSON: None instead.
            "accuracy": [[v if v == v else None for v in row] for row in matrix.tolist()],
        }
        client.log_dict(run_id, table, f"{path}.json")

    def _judge_pending(self, trainer: Trainer) -> None:
        """Once the checkpoint callback has seen the pending validation (at the next validation
        or when fitting ends): it is the best if the checkpoint's best changed since."""
        if self._pending is None:
            return
        best_now = checkpoint_best(trainer)
        if best_now is None or best_now != self._best_before:
            self._best = self._pending
        self._pending = None

    @staticmethod
    def _snapshot(trainer: Trainer, pl_module: EvaluatedModel, stage: str) -> dict:
        """Copy what this evaluation produced: later epochs overwrite the module's results."""
        metrics = {
            key: float(value)
            for key, value in trainer.callback_metrics.items()
            if key.startswith(f"{stage}/") and torch.as_tensor(value).numel() == 1
        }
        return {
            "epoch": trainer.current_epoch,
            "matrices": dict(pl_module.evaluation_results[stage]),
            "metrics": metrics,
        }

    def _log(self, trainer: Trainer, pl_module: EvaluatedModel, stage: str, snapshot: dict) -> None:
        logger = find_mlflow_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        client, run_id, folder = logger.experiment, logger.run_id, f"evaluation/{stage}"
        matrices: dict[str, torch.Tensor] = snapshot["matrices"]
        class_names = list(pl_module.class_names)
        accuracies = {
            metric_safe_name(domain): accuracy_from_confusion(matrix).item()
            for domain, matrix in matrices.items()
        }
        domains = list(accuracies)
        label = "best validation epoch" if trainer.state.fn == TrainerFn.FITTING else stage
        run_name = client.get_run(run_id).info.run_name
        figure = accuracy_bar_chart(
            domains,
            {stage: list(accuracies.values())},
            title=f"{run_name}: {stage} accuracy per domain ({label})",
        )
        client.log_figure(run_id, figure, f"{folder}/domain_accuracy.png")
        if self.confusion_matrices:
            for domain, matrix in matrices.items():
                title = f"{domain} ({stage}, {int(matrix.sum())} images)"
                figure = confusion_matrix_figure(matrix, class_names, title)
                client.log_figure(
                    run_id, figure, f"{folder}/confusion/{metric_safe_name(domain)}.png"
                )
        client.log_text(
            run_id,
            per_class_accuracy_csv(matrices, class_names),
            f"{folder}/per_class_accuracy.csv",
        )
        metrics = {
            key.removeprefix(f"{stage}/"): value
            for key, value in snapshot["metrics"].items()
            if key.removeprefix(f"{stage}/").startswith(SUMMARY_PREFIXES)
        }
        summary = {"stage": stage, "epoch": snapshot["epoch"], "accuracy": accuracies, **metrics}
        client.log_dict(run_id, summary, f"{folder}/summary.json")
        style = {
            key.removeprefix(STYLE_ACC_PREFIX): value
            for key, value in metrics.items()
            if key.startswith(STYLE_ACC_PREFIX)
        }
        if style:
            # Accuracy on clean images beside accuracy on style-transferred ones, per domain.
            shown = [d for d in domains if d in style]
            figure = accuracy_bar_chart(
                shown,
                {"original": [accuracies[d] for d in shown], "stylised": [style[d] for d in shown]},
                title=f"{stage}: accuracy on original vs stylised images",
            )
            client.log_figure(run_id, figure, f"{folder}/style_robustness.png")
