"""Figures of the recorded gates: heat maps per block, domain separation across depth.

Drawn on `matplotlib.figure.Figure` objects (no pyplot state), as `callbacks/charts.py`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from matplotlib.figure import Figure
from torch import Tensor


def short_block_name(block: str) -> str:
    """`layer1.0.recalibration` -> `layer1.0` (the module's suffix dropped)."""
    return block.removesuffix(".recalibration")


def gate_heatmap(means: Tensor, overall: Tensor, row_labels: Sequence[str], title: str) -> Figure:
    """Two panels: the mean gate per row (domain or class) and channel, and its deviation from
    the all-image mean gate of the channel (diverging colours, symmetric around 0).

    Args:
        means: (R, C) mean gate per row and channel (NaN rows drawn blank).
        overall: (C,) the all-image mean gate per channel.
        row_labels: R names.
        title: The figure's title (block and kind).
    """
    means = means.double()
    deviation = means - overall.double()[None]
    rows, channels = means.shape
    width = min(16.0, max(6.0, 2.5 + channels * 0.09))
    height = 1.6 + 2 * (0.5 + 0.28 * rows)
    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    axes_mean, axes_deviation = figure.subplots(2, 1)
    finite = means[torch.isfinite(means)]
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    image = axes_mean.imshow(means.numpy(), aspect="auto", cmap="viridis", vmin=low, vmax=high)
    figure.colorbar(image, ax=axes_mean, label="mean gate")
    limit = float(deviation[torch.isfinite(deviation)].abs().max()) if len(finite) else 1.0
    limit = limit if limit > 0 else 1e-6
    image = axes_deviation.imshow(
        deviation.numpy(), aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit
    )
    figure.colorbar(image, ax=axes_deviation, label="minus all-image mean")
    labels = [label.replace("_", " ") for label in row_labels]
    for axes in (axes_mean, axes_deviation):
        axes.set_yticks(range(rows), labels, fontsize=8)
        axes.set_xlabel("channel")
    axes_mean.set_title(title, fontsize=10)
    return figure


def separation_figure(runs: Mapping[str, Sequence[Mapping]], title: str = "") -> Figure:
    """Domain separation across depth, one line per run.

    Left: mean pairwise cosine distance between the domains' mean gate vectors; right: the
    linear probe's accuracy predicting the domain from an image's gates (dotted: chance, the
    majority rate, of the first run). x: the block, in depth order (ticks from the first run).

    Args:
        runs: label -> rows of `separation_rows` / `rows_from_csv`.
        title: The figure's title.
    """
    figure = Figure(figsize=(12.0, 4.4), dpi=110, layout="constrained")
    axes_distance, axes_probe = figure.subplots(1, 2)
    for label, rows in runs.items():
        depth = [row["depth"] for row in rows]
        axes_distance.plot(
            depth, [row["domain_cosine_distance"] for row in rows], "o-", label=label
        )
        axes_probe.plot(
            depth, [100 * row["domain_probe_accuracy"] for row in rows], "o-", label=label
        )
    first = next(iter(runs.values()), [])
    chance = [row["probe_chance"] for row in first]
    if chance and not all(math.isnan(value) for value in chance):
        axes_probe.plot(
            [row["depth"] for row in first],
            [100 * value for value in chance],
            ":",
            color="gray",
            label="chance",
        )
    ticks = [row["depth"] for row in first]
    names = [short_block_name(row["block"]) for row in first]
    for axes in (axes_distance, axes_probe):
        axes.set_xticks(ticks, names, rotation=45, ha="right", fontsize=8)
        axes.set_xlabel("block (input -> output)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    axes_distance.set_ylabel("mean pairwise cosine distance\nof the domains' mean gates")
    axes_probe.set_ylabel("domain probe accuracy (%), held-out half")
    axes_probe.set_ylim(0, 100)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure
