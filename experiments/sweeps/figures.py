"""The sweep report's figures: per-domain accuracy bars and learning curves (over epochs, or
over steps where runs validate by steps)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from matplotlib import colormaps
from matplotlib.figure import Figure

from experiments.sweeps.selection import TrialRecord, case_text
from experiments.sweeps.statistics import mean_se
from lightning_modules.callbacks.charts import accuracy_bar_chart
from lightning_modules.names import ACC_HELD_OUT_MEAN, ACC_MEAN, VAL, metric_key

if TYPE_CHECKING:
    from experiments.sweeps.report import AccuracyTable


#: Learning-curve panels per row of the figure.
PANELS_PER_ROW = 4


def accuracy_chart(table: AccuracyTable, order: Sequence[str], title: str) -> Figure:
    """Bars per column (domain or held-out set) and module; error bars: SE over seeds. In a
    sweep with cases: the summary per set of case labels (a source -> target pair) and module."""
    contexts = table.contexts()
    if any(contexts):
        modules = table.modules(order)
        return accuracy_bar_chart(
            [case_text(cases) for cases in contexts],
            {m: [table.stat(m, table.summary, c).mean for c in contexts] for m in modules},
            errors={m: [table.stat(m, table.summary, c).se for c in contexts] for m in modules},
            title=f"{title} ({table.summary})",
        )
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


def one_validation_per_epoch(records: list[TrialRecord]) -> bool:
    """Whether every run validated once per epoch (epoch-based; then curves are drawn over
    epochs, which runs of other batch sizes share, rather than over steps)."""
    return all(
        set(r.validation_epochs) == set(r.steps())
        and len(set(r.validation_epochs.values())) == len(r.steps())
        for r in records
    )


def learning_curves(records: list[TrialRecord], order: Sequence[str]) -> Figure:
    """Validation accuracy per epoch (per step where runs validate more often, or not once per
    epoch), one line per module (mean over seeds and draws, band = SE), one panel per case
    labels and held-out set: the trained domains' mean, and the held-out mean."""
    done = [r for r in records if r.state == "done"]
    panels = list(dict.fromkeys((r.cases, r.held_out_label) for r in done))
    trained, held_out = metric_key(VAL, ACC_MEAN), metric_key(VAL, ACC_HELD_OUT_MEAN)
    metrics = [(trained, f"trained domains ({trained})")]
    if any(label for _, label in panels):
        metrics.append((held_out, f"held-out ({held_out})"))
    by_epoch = one_validation_per_epoch(done)
    # x of each (record, step): the epoch count, or the step count, after the validation.
    if by_epoch:
        x_of = {id(r): {s: r.epoch_at(s) + 1 for s in r.steps()} for r in done}
    else:
        x_of = {id(r): {s: s + 1 for s in r.steps()} for r in done}
    columns = min(PANELS_PER_ROW, len(panels))
    panel_rows = -(-len(panels) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * len(metrics) * panel_rows + 0.4), dpi=110)
    grid = figure.subplots(len(metrics) * panel_rows, columns, squeeze=False)
    for index in range(len(panels), columns * panel_rows):
        for row in range(len(metrics)):
            grid[(index // columns) * len(metrics) + row][index % columns].set_visible(False)
    rank = {m: i for i, m in enumerate(order)}
    modules = sorted({r.module for r in done}, key=lambda m: (rank.get(m, len(rank)), m))
    palette = colormaps["tab10"]
    colors = {module: palette(index % 10) for index, module in enumerate(modules)}
    for index, (cases, panel) in enumerate(panels):
        for row, (metric, label) in enumerate(metrics):
            axes = grid[(index // columns) * len(metrics) + row][index % columns]
            if metric == held_out and not panel:
                axes.set_visible(False)
                continue
            for module in modules:
                mine = [
                    r
                    for r in done
                    if (r.module, r.cases, r.held_out_label) == (module, cases, panel)
                ]
                by_x = [{x_of[id(r)][s]: s for s in r.history.get(metric, {})} for r in mine]
                xs = sorted({x for steps in by_x for x in steps})
                if not xs:
                    continue
                stats = [
                    mean_se(
                        [
                            r.value(metric, steps.get(x, -1))
                            for r, steps in zip(mine, by_x, strict=True)
                        ]
                    )
                    for x in xs
                ]
                means = [100 * s.mean for s in stats]
                ses = [0.0 if math.isnan(s.se) else 100 * s.se for s in stats]
                axes.plot(xs, means, label=module, color=colors[module], linewidth=1.4)
                axes.fill_between(
                    xs,
                    [m - s for m, s in zip(means, ses, strict=True)],
                    [m + s for m, s in zip(means, ses, strict=True)],
                    color=colors[module],
                    alpha=0.2,
                    linewidth=0,
                )
            where = f"held out: {panel}" if panel else "all domains"
            axes.set_title(
                " ".join(p for p in (case_text(cases), where) if p) + f": {label}", fontsize=8
            )
            axes.set_xlabel("epoch" if by_epoch else "step")
            axes.set_ylabel("accuracy (%)")
            axes.grid(alpha=0.3)
    grid[0][0].legend(fontsize=8)
    figure.tight_layout()
    return figure
