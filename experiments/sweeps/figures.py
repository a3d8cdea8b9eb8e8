"""The sweep report's figures: per-domain accuracy bars and learning curves."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from matplotlib import colormaps
from matplotlib.figure import Figure

from experiments.sweeps.selection import TrialRecord
from experiments.sweeps.statistics import mean_se
from lightning_modules.callbacks.charts import accuracy_bar_chart
from lightning_modules.names import ACC_HELD_OUT_MEAN, ACC_MEAN, VAL, metric_key

if TYPE_CHECKING:
    from experiments.sweeps.report import AccuracyTable


def accuracy_chart(table: AccuracyTable, order: Sequence[str], title: str) -> Figure:
    """Bars per column (domain or held-out set) and module; error bars: SE over seeds."""
    modules = table.modules(order)
    shown = [c for c in table.columns if c != "worst"]
    figure = accuracy_bar_chart(
        [c.replace("_", " ") for c in shown],
        {m: [table.stat(m, c).mean for c in shown] for m in modules},
        errors={m: [table.stat(m, c).se for c in shown] for m in modules},
        title=title,
    )
    # The summary (last bar group) is not one more domain: set it apart.
    figure.axes[0].axvline(len(shown) - 1.5, color="grey", linestyle=":", linewidth=1)
    return figure


def learning_curves(records: list[TrialRecord], order: Sequence[str]) -> Figure:
    """Validation accuracy per epoch, one line per module (mean over seeds and draws, band =
    SE), one panel per held-out set: the trained domains' mean, and the held-out mean."""
    panels = sorted({r.held_out_label for r in records if r.state == "done"})
    trained, held_out = metric_key(VAL, ACC_MEAN), metric_key(VAL, ACC_HELD_OUT_MEAN)
    metrics = [(trained, f"trained domains ({trained})")]
    if any(panels):
        metrics.append((held_out, f"held-out ({held_out})"))
    figure = Figure(figsize=(4.2 * len(panels), 3.2 * len(metrics) + 0.4), dpi=110)
    grid = figure.subplots(len(metrics), len(panels), squeeze=False)
    rank = {m: i for i, m in enumerate(order)}
    modules = sorted({r.module for r in records}, key=lambda m: (rank.get(m, len(rank)), m))
    palette = colormaps["tab10"]
    colors = {module: palette(index % 10) for index, module in enumerate(modules)}
    for column, panel in enumerate(panels):
        for row, (metric, label) in enumerate(metrics):
            axes = grid[row][column]
            if metric == held_out and not panel:
                axes.set_visible(False)
                continue
            for module in modules:
                mine = [
                    r
                    for r in records
                    if r.module == module and r.held_out_label == panel and r.state == "done"
                ]
                epochs = sorted({e for r in mine for e in r.history.get(metric, {})})
                if not epochs:
                    continue
                stats = [mean_se([r.value(metric, e) for r in mine]) for e in epochs]
                means = [100 * s.mean for s in stats]
                ses = [0.0 if math.isnan(s.se) else 100 * s.se for s in stats]
                xs = [e + 1 for e in epochs]
                axes.plot(xs, means, label=module, color=colors[module], linewidth=1.4)
                axes.fill_between(
                    xs,
                    [m - s for m, s in zip(means, ses, strict=True)],
                    [m + s for m, s in zip(means, ses, strict=True)],
                    color=colors[module],
                    alpha=0.2,
                    linewidth=0,
                )
            axes.set_title(
                f"{'held out: ' + panel if panel else 'all domains'}: {label}", fontsize=8
            )
            axes.set_xlabel("epoch")
            axes.set_ylabel("accuracy (%)")
            axes.grid(alpha=0.3)
    grid[0][0].legend(fontsize=8)
    figure.tight_layout()
    return figure
