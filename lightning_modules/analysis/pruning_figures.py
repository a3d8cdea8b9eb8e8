"""Figures of the pruning study: accuracy vs pruning ratio, gate ranking vs random baseline.

Drawn on `matplotlib.figure.Figure` objects (no pyplot state), as the evaluation figures in
`lightning_modules/callbacks/charts.py`. Solid lines are the gate ranking, dashed lines the
random baseline; accuracies are drawn in percent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

from lightning_modules.analysis.pruning import PruningPoint, metric_names
from lightning_modules.names import ACC_MEAN, domain_metric_prefix

_STYLES = {"gate": "-", "random": "--"}
_MARKERS = {"gate": "o", "random": "x"}


def _series(points: Sequence[PruningPoint], rule: str, key: str) -> tuple[list, list]:
    chosen = sorted(
        (p for p in points if p.rule == rule and key in p.metrics), key=lambda p: p.ratio
    )
    return [p.ratio for p in chosen], [100 * p.metrics[key] for p in chosen]


def accuracy_vs_ratio_figure(points: Sequence[PruningPoint], title: str = "") -> Figure:
    """Two panels: mean accuracy (left) and each domain's accuracy (right) vs pruning ratio.

    Args:
        points: One run's curve (`pruning_curve`).
        title: Figure title (e.g. the source run's name).

    Returns:
        The figure.
    """
    figure = Figure(figsize=(11.0, 4.2), dpi=110)
    mean_axes, domain_axes = figure.subplots(1, 2, sharey=True)
    for rule in _STYLES:
        ratios, values = _series(points, rule, ACC_MEAN)
        mean_axes.plot(
            ratios, values, _STYLES[rule], marker=_MARKERS[rule], label=f"{rule} ranking"
        )
    prefix = domain_metric_prefix(None)
    domains = [k for k in metric_names(points) if k.startswith(prefix)]
    colors = [f"C{i % 10}" for i in range(len(domains))]
    for key, color in zip(domains, colors, strict=True):
        for rule in _STYLES:
            ratios, values = _series(points, rule, key)
            label = f"{key.removeprefix(prefix).replace('_', ' ')} ({rule})"
            domain_axes.plot(ratios, values, _STYLES[rule], color=color, label=label)
    mean_axes.set_title("mean over trained domains")
    domain_axes.set_title("per domain")
    for axes in (mean_axes, domain_axes):
        axes.set_xlabel("pruning ratio (fraction of each block's channels masked)")
        axes.grid(alpha=0.3)
    mean_axes.set_ylabel("accuracy (%)")
    mean_axes.legend(fontsize=8)
    domain_axes.legend(fontsize=7, ncol=2)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def overlay_figure(curves: Mapping[str, Sequence[PruningPoint]], title: str = "") -> Figure:
    """Mean accuracy vs pruning ratio of several runs in one chart (a colour per run).

    Args:
        curves: Label (e.g. the module's name) -> that run's curve.
        title: Figure title.

    Returns:
        The figure.
    """
    figure = Figure(figsize=(7.5, 4.6), dpi=110)
    axes = figure.add_subplot()
    for index, (label, points) in enumerate(curves.items()):
        for rule in _STYLES:
            ratios, values = _series(points, rule, ACC_MEAN)
            axes.plot(
                ratios,
                values,
                _STYLES[rule],
                marker=_MARKERS[rule],
                color=f"C{index % 10}",
                label=f"{label}, {rule} ranking",
            )
    axes.set_xlabel("pruning ratio (fraction of each block's channels masked)")
    axes.set_ylabel("mean accuracy (%)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    axes.set_title(title or "accuracy vs pruning ratio (solid: gate ranking, dashed: random)")
    figure.tight_layout()
    return figure
