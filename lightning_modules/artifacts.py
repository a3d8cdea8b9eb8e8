"""Evaluation artifacts in MLflow: per-domain accuracy chart, confusion matrices, per-class CSV.

`EvaluationArtifacts` (a Lightning callback, registered by the CLI) logs them for the best
validation epoch at the end of `fit`, for each `validate`, and for each `test`, under
`evaluation/<stage>/` in the run. Figures are drawn on `matplotlib.figure.Figure` objects,
which render through Agg without touching pyplot's global backend state.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence

import torch
from matplotlib.figure import Figure
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.trainer.states import TrainerFn

from lightning_modules.metrics import accuracy_from_confusion, metric_safe_name, per_class_accuracy

NUM_PARAMETERS_KEY = "model/num_parameters"
# Metrics copied into `summary.json` besides per-domain accuracy, when the run logged them
# (the style metrics come from the style-robustness evaluation, absent in plain runs).
SUMMARY_PREFIXES = ("acc_mean", "acc_worst", "acc_held_out_mean", "loss", "style_")
STYLE_ACC_PREFIX = "style_acc/"


def accuracy_bar_chart(
    domains: Sequence[str],
    groups: Mapping[str, Sequence[float]],
    errors: Mapping[str, Sequence[float]] | None = None,
    title: str = "",
) -> Figure:
    """Grouped bars: domains on x, one bar per group, accuracies in [0, 1] drawn as percent.

    One group is a single run's chart; several are the comparison report's. `errors` (same
    shape as `groups`) draws error bars, e.g. the std over seeds; NaN values are left out.
    """
    width_per_domain = max(1.2, 0.35 * len(groups) + 0.4)
    figure = Figure(figsize=(max(6.0, 1.2 + width_per_domain * len(domains)), 4.2), dpi=110)
    axes = figure.add_subplot()
    bar_width = 0.8 / max(1, len(groups))
    cmap = _group_colors(len(groups))
    for index, (label, values) in enumerate(groups.items()):
        positions = [d + (index - (len(groups) - 1) / 2) * bar_width for d in range(len(domains))]
        heights = [100 * v for v in values]
        yerr = None
        if errors is not None and any(not math.isnan(e) for e in errors.get(label, [])):
            # NaN errors (a single seed) draw nothing, where 0 would draw a misleading cap.
            yerr = [100 * e for e in errors[label]]
        axes.bar(
            positions,
            heights,
            bar_width * 0.92,
            yerr=yerr,
            capsize=3,
            label=label,
            color=cmap[index],
        )
        # Numbers at the bars' feet: read for the differences, and clear of the error bars
        # (`bar_label` would put them at the error bars' ends, on top of the next group's).
        if bar_width * 0.92 >= 0.12:
            for position, height in zip(positions, heights, strict=True):
                if not math.isnan(height) and height >= 8:
                    axes.text(position, 2, f"{height:.0f}", ha="center", fontsize=7, color="white")
    axes.set_xticks(range(len(domains)), [d.replace("_", " ") for d in domains])
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 105)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    if title:
        axes.set_title(title)
    if len(groups) > 1:
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    figure.tight_layout()
    return figure


def _group_colors(count: int) -> list:
    """Distinct colours: tab10 for up to ten groups, then evenly spaced viridis."""
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    return [colormaps["viridis"](i / (count - 1)) for i in range(count)]


def confusion_matrix_figure(matrix: torch.Tensor, class_names: Sequence[str], title: str) -> Figure:
    """Row-normalised confusion matrix (rows: true class), readable up to Office-Home's 65 classes.

    The figure grows with the number of classes so every class name stays on the axes; counts are
    written in the cells only while they fit (up to 20 classes).
    """
    count = len(class_names)
    totals = matrix.sum(dim=1, keepdim=True).clamp(min=1)
    normalised = (matrix / totals).numpy()
    side = max(4.5, 2.5 + 0.22 * count)
    label_size = 8 if count <= 30 else 6
    figure = Figure(figsize=(side + 1.0, side), dpi=110)
    axes = figure.add_subplot()
    image = axes.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the true class")
    ticks = range(count)
    axes.set_xticks(ticks, class_names, rotation=90, fontsize=label_size)
    axes.set_yticks(ticks, class_names, fontsize=label_size)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    if count <= 20:
        for row in range(count):
            for column in range(count):
                value = int(matrix[row, column])
                if value:
                    dark = normalised[row, column] > 0.6
                    axes.text(
                        column,
                        row,
                        str(value),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if dark else "black",
                    )
    figure.tight_layout()
    return figure


def per_class_accuracy_csv(matrices: Mapping[str, torch.Tensor], class_names: Sequence[str]) -> str:
    """Long-format CSV: domain, class, samples, correct, accuracy (empty without samples)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["domain", "class", "samples", "correct", "accuracy"])
    for domain, matrix in matrices.items():
        accuracies = per_class_accuracy(matrix)
        for index, name in enumerate(class_names):
            accuracy = accuracies[index].item()
            writer.writerow(
                [
                    domain,
                    name,
                    int(matrix[index].sum()),
                    int(matrix[index, index]),
                    "" if math.isnan(accuracy) else f"{accuracy:.6f}",
                ]
            )
    return buffer.getvalue()


def _mlflow_logger(trainer: Trainer) -> MLFlowLogger | None:
    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            return logger
    return None


class EvaluationArtifacts(Callback):
    """Logs evaluation figures and tables to the MLflow run (global rank zero only).

    - `fit`: the results of the best validation epoch (the epoch the checkpoint callback keeps,
      judged on its monitored metric), logged once when fitting ends, so a long run does not
      upload a set of figures per epoch.
    - `validate` / `test`: the results of that evaluation, logged when it ends.

    Under `evaluation/<stage>/`: `domain_accuracy.png`, `confusion/<domain>.png`,
    `per_class_accuracy.csv`, `summary.json` (per-domain accuracy, mean, worst and any
    `<stage>/style_*` metrics), and `style_robustness.png` when style metrics were logged.
    The parameter count is logged as the `model/num_parameters` param when a run starts.
    """

    def __init__(self, confusion_matrices: bool = True) -> None:
        """Args:
        confusion_matrices: draw a confusion matrix per domain (the slowest artifact).
        """
        self.confusion_matrices = confusion_matrices
        self._best: dict | None = None
        self._best_score: float | None = None

    def _log_parameter_count(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = _mlflow_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        count = sum(p.numel() for p in pl_module.parameters())
        # MLflow accepts re-logging a param with the same value (fit then test in one run).
        logger.experiment.log_param(logger.run_id, NUM_PARAMETERS_KEY, count)

    # Logged when a stage starts, not in `setup`: the config callback's `setup` reads a run
    # that already has params as a resumed one.
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._best, self._best_score = None, None
        self._log_parameter_count(trainer, pl_module)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._log_parameter_count(trainer, pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_parameter_count(trainer, pl_module)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or "val" not in getattr(pl_module, "evaluation_results", {}):
            return
        snapshot = self._snapshot(trainer, pl_module, "val")
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._log(trainer, pl_module, "val", snapshot)
        elif self._is_best(trainer, snapshot["metrics"]):
            self._best = snapshot

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._best is not None:
            self._log(trainer, pl_module, "val", self._best)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "test" in getattr(pl_module, "evaluation_results", {}):
            self._log(trainer, pl_module, "test", self._snapshot(trainer, pl_module, "test"))

    def _is_best(self, trainer: Trainer, metrics: dict[str, float]) -> bool:
        """Same rule as the checkpoint callback; without one, `val/acc_mean`, higher is better."""
        checkpoint = trainer.checkpoint_callback
        monitor = getattr(checkpoint, "monitor", None) or "val/acc_mean"
        maximise = getattr(checkpoint, "mode", "max") == "max"
        score = metrics.get(monitor)
        if score is None:
            return self._best is None  # nothing to rank by: keep the latest epoch
        better = (
            self._best_score is None
            or (maximise and score > self._best_score)
            or (not maximise and score < self._best_score)
        )
        if better:
            self._best_score = score
        return better

    @staticmethod
    def _snapshot(trainer: Trainer, pl_module: LightningModule, stage: str) -> dict:
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

    def _log(
        self, trainer: Trainer, pl_module: LightningModule, stage: str, snapshot: dict
    ) -> None:
        logger = _mlflow_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        client, run_id, folder = logger.experiment, logger.run_id, f"evaluation/{stage}"
        matrices: dict[str, torch.Tensor] = snapshot["matrices"]
        class_names = list(getattr(pl_module, "class_names", []))
        if not class_names and matrices:
            class_names = [str(i) for i in range(next(iter(matrices.values())).shape[0])]
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
