"""Evaluation figures and tables: per-domain accuracy bars, confusion matrices, the cross-domain
heat map, per-class CSV.

Drawn on `matplotlib.figure.Figure` objects, which render through Agg without touching pyplot's
global backend state. `EvaluationArtifacts` logs them per run; the comparison report
(`experiments/compare.py`) draws its chart with `accuracy_bar_chart` too.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence

import torch
from matplotlib.figure import Figure

from lightning_modules.metrics import per_class_accuracy


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


def cross_domain_figure(
    matrix: torch.Tensor, head_names: Sequence[str], domain_names: Sequence[str], title: str
) -> Figure:
    """Heat map of a cross-domain accuracy matrix, values written in the cells."""
    # A bare Figure (not pyplot) needs no GUI backend and leaves no global state behind.
    figure = Figure(figsize=(1.2 * len(domain_names) + 2.5, 0.9 * len(head_names) + 1.8))
    axes = figure.add_subplot()
    values = matrix.cpu().float().numpy()
    image = axes.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis")
    axes.set_xticks(range(len(domain_names)), list(domain_names), rotation=30, ha="right")
    axes.set_yticks(range(len(head_names)), list(head_names))
    axes.set_xlabel("data domain")
    axes.set_ylabel("head")
    axes.set_title(title)
    for row, column in ((r, c) for r in range(len(head_names)) for c in range(len(domain_names))):
        value = values[row, column]
        text = "-" if value != value else f"{100 * value:.1f}"
        # Light text on the dark end of viridis, dark on the bright end.
        axes.text(column, row, text, ha="center", va="center", color="w" if value < 0.6 else "k")
    figure.colorbar(image, ax=axes, label="accuracy")
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
