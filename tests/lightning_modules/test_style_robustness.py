"""Style metrics from tiny hand-made predictions, and the cross-domain matrix and heat map."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lightning_modules.callbacks.charts import cross_domain_figure
from lightning_modules.style_robustness import CrossDomainAccuracy, StyleRobustness, style_summary


def test_style_summary_is_the_ratio_of_means_over_trained_domains() -> None:
    style = {"Art": 0.5, "Clipart": 0.25, "Product": 1.0}
    plain = {"Art": 1.0, "Clipart": 0.5, "Product": 0.2}
    # Product is held out: like acc_mean, neither mean includes it.
    summary = style_summary(style, plain, ["Art", "Clipart"])
    assert summary["style_acc_mean"] == pytest.approx(0.375)  # (0.5 + 0.25) / 2
    assert summary["style_robustness"] == pytest.approx(0.5)  # 0.375 / ((1.0 + 0.5) / 2)
    # undefined ratio: left out rather than logged as inf
    assert "style_robustness" not in style_summary(style, {"Art": 0.0}, ["Art"])


def test_epoch_end_metrics_equal_hand_computed_values() -> None:
    tracker = StyleRobustness(["Art", "Real World"], ["Art", "Real World"], num_classes=3)
    # shifted set: Art 2 of 4 right, Real World 3 of 4 right
    preds = torch.tensor([0, 1, 2, 2, 0, 1, 1, 0])
    target = torch.tensor([0, 1, 0, 0, 0, 1, 1, 1])
    domain = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    tracker.update_shifted("val", preds, target, domain)
    tracker.update_cross_domain("val", torch.zeros(8, 2, 3), target, domain)
    metrics = tracker.epoch_end("val", {"Art": 1.0, "Real World": 0.75})
    assert metrics == pytest.approx(
        {
            "val/style_acc/Art": 0.5,
            "val/style_acc/Real_World": 0.75,
            "val/style_acc_mean": 0.625,
            # 0.625 / ((1.0 + 0.75) / 2)
            "val/style_robustness": 0.625 / 0.875,
        }
    )
    # the accumulators were reset: a pass without shifted batches reports nothing
    tracker.update_cross_domain("val", torch.zeros(8, 2, 3), target, domain)
    assert tracker.epoch_end("val", {"Art": 1.0, "Real World": 0.75}) == {}


def test_cross_domain_matrix_counts_every_head_on_every_domain() -> None:
    metric = CrossDomainAccuracy(num_heads=2, num_domains=3)
    target = torch.tensor([0, 1, 1, 0])
    domain = torch.tensor([0, 0, 1, 1])
    logits = torch.zeros(4, 2, 2)
    logits[:, 0, 0] = 1.0  # head 0 always says class 0
    logits[:, 1, 1] = 1.0  # head 1 always says class 1
    metric.update(logits, target, domain)
    matrix = metric.compute()
    torch.testing.assert_close(matrix[:, :2], torch.full((2, 2), 0.5))
    assert torch.isnan(matrix[:, 2]).all()  # no samples of domain 2


def test_cross_domain_heat_map_renders(tmp_path: Path) -> None:
    matrix = torch.tensor([[0.9, 0.4, math.nan], [0.3, 0.8, 0.5]])
    figure = cross_domain_figure(matrix, ["Art", "Clipart"], ["Art", "Clipart", "Product"], "val")
    figure.savefig(tmp_path / "heat.png")
    assert (tmp_path / "heat.png").stat().st_size > 1000
