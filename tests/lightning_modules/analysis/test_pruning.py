"""Channel pruning: counts, rankings, masks on a tiny network computed by hand, the curve."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from lightning_modules.analysis.pruning import (
    ChannelMask,
    PruningPoint,
    as_logged,
    channel_masks,
    evaluate_domains,
    gate_rankings,
    mlflow_metrics,
    points_from_csv,
    points_to_csv,
    pruned_count,
    pruning_curve,
    random_rankings,
)
from lightning_modules.analysis.pruning_figures import accuracy_vs_ratio_figure, overlay_figure
from lightning_modules.classifier import MultiDomainClassifier


class FixedGate(nn.Module):
    """x -> x * g with a fixed per-channel gate: a recalibration module with a known gate."""

    def __init__(self, gate: list[float]) -> None:
        super().__init__()
        self.register_buffer("gate", torch.tensor(gate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate.view(1, -1, 1, 1)


class TinyBlock(nn.Module):
    """relu(x + recalibration(x)): a residual block whose branch is only the module."""

    def __init__(self, gate: list[float]) -> None:
        super().__init__()
        self.recalibration = FixedGate(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.recalibration(x))


def test_pruned_count_is_the_floor_of_ratio_times_channels() -> None:
    assert [pruned_count(10, r / 10) for r in range(10)] == list(range(10))
    assert pruned_count(16, 0.1) == 1  # 1.6 -> 1
    assert pruned_count(16, 0.5) == 8
    assert pruned_count(64, 0.9) == 57  # 57.6 -> 57
    assert pruned_count(3, 0.0) == 0
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        pruned_count(8, 1.0)
    with pytest.raises(ValueError):
        pruned_count(8, -0.1)


def test_gate_ranking_is_lowest_first_stable_and_nan_first() -> None:
    ranking = gate_rankings({"b": torch.tensor([0.5, 0.1, 0.9, 0.1, float("nan")])})["b"]
    assert ranking.tolist() == [4, 1, 3, 0, 2]


def test_masking_by_a_known_ranking_changes_the_output_as_computed_by_hand() -> None:
    block = TinyBlock([0.5, 0.1, 0.9, 0.3])
    x = torch.tensor([1.0, -2.0, 3.0, 4.0]).view(1, 4, 1, 1)
    modules = {"recalibration": block.recalibration}
    # Unmasked: relu(x + x g) = relu([1.5, -2.2, 5.7, 5.2])
    assert torch.allclose(block(x).flatten(), torch.tensor([1.5, 0.0, 5.7, 5.2]))
    rankings = gate_rankings({"recalibration": block.recalibration.gate})
    assert rankings["recalibration"].tolist() == [1, 3, 0, 2]
    # ratio 0.5 masks floor(2.0) = 2 channels, the two lowest gates (1 and 3): their branch
    # output is zero, so only the shortcut remains there: relu([1.5, -2, 5.7, 4]).
    masks = channel_masks(rankings, 0.5)
    assert masks["recalibration"].tolist() == [1.0, 0.0, 1.0, 0.0]
    with ChannelMask(modules, masks) as mask:
        assert list(mask.masks) == ["recalibration"]
        out = block(x).flatten()
    assert torch.allclose(out, torch.tensor([1.5, 0.0, 5.7, 4.0]))
    # ratio 0.75 masks 3: channel 0 too -> relu(1) = 1.
    with ChannelMask(modules, channel_masks(rankings, 0.75)):
        assert torch.allclose(block(x).flatten(), torch.tensor([1.0, 0.0, 5.7, 4.0]))
    # Hooks are gone on exit.
    assert torch.allclose(block(x).flatten(), torch.tensor([1.5, 0.0, 5.7, 5.2]))
    assert not block.recalibration._forward_hooks


def test_a_mask_that_keeps_everything_installs_no_hook() -> None:
    block = TinyBlock([0.5, 0.1])
    with ChannelMask({"r": block.recalibration}, {"r": torch.ones(2)}):
        assert not block.recalibration._forward_hooks
    with pytest.raises(KeyError, match="unknown blocks"):
        ChannelMask({"r": block.recalibration}, {"other": torch.ones(2)})


def test_random_baseline_is_seeded_and_repeatable() -> None:
    channels = {"layer1.0.recalibration": 16, "layer2.0.recalibration": 32}
    first, again = random_rankings(channels, seed=3), random_rankings(channels, seed=3)
    other = random_rankings(channels, seed=4)
    for name, count in channels.items():
        assert torch.equal(first[name], again[name])
        assert sorted(first[name].tolist()) == list(range(count))
    assert any(not torch.equal(first[n], other[n]) for n in channels)


def tiny_classifier() -> MultiDomainClassifier:
    torch.manual_seed(0)
    model = MultiDomainClassifier(
        backbone="resnet20",
        recalibration="srm",
        num_classes=3,
        domain_names=["A", "B"],
        image_size=16,
    )
    # Non-trivial BN statistics and gates, as after training.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def tiny_batches(count: int = 3, batch: int = 8) -> list:
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.randint(0, 256, (batch, 3, 16, 16), dtype=torch.uint8, generator=generator),
            torch.randint(0, 3, (batch,), generator=generator),
            torch.randint(0, 2, (batch,), generator=generator),
        )
        for _ in range(count)
    ]


def normalize(batch, dataloader_idx: int = 0):
    images, *rest = batch
    return (images.float() / 255 - 0.5) / 0.25, *rest


def test_evaluate_domains_counts_each_domain_through_its_head() -> None:
    model, batches = tiny_classifier(), tiny_batches()
    result = evaluate_domains(model, batches, normalize, progress=False)
    correct = {0: 0, 1: 0}
    total = {0: 0, 1: 0}
    with torch.no_grad():
        for images, labels, domains in batches:
            predictions = model(normalize((images,))[0], domains).argmax(dim=1)
            for d in (0, 1):
                correct[d] += int((predictions[domains == d] == labels[domains == d]).sum())
                total[d] += int((domains == d).sum())
    assert result["acc/A"] == pytest.approx(correct[0] / total[0])
    assert result["acc/B"] == pytest.approx(correct[1] / total[1])
    assert result["acc_mean"] == pytest.approx((result["acc/A"] + result["acc/B"]) / 2)
    assert result["num_samples"] == 24


def test_pruning_curve_same_counts_for_both_rules_and_ratio_zero_is_the_unpruned_model() -> None:
    model, batches = tiny_classifier(), tiny_batches()
    modules = model.backbone.recalibration_modules()
    generator = torch.Generator().manual_seed(1)
    mean_gates = {n: torch.rand(m.channels, generator=generator) for n, m in modules.items()}
    ratios = [0.0, 0.25, 0.5]
    points = pruning_curve(model, batches, normalize, mean_gates, ratios, seed=0, progress=False)
    assert [(p.rule, p.ratio) for p in points] == [
        (rule, r) for rule in ("gate", "random") for r in ratios
    ]
    total = sum(m.channels for m in modules.values())
    by_key = {(p.rule, p.ratio): p for p in points}
    for ratio in ratios:
        expected = sum(pruned_count(m.channels, ratio) for m in modules.values())
        assert by_key["gate", ratio].pruned_channels == expected
        assert by_key["random", ratio].pruned_channels == expected
        assert by_key["gate", ratio].total_channels == total
    unpruned = evaluate_domains(model, batches, normalize, progress=False)
    assert by_key["gate", 0.0].metrics == unpruned == by_key["random", 0.0].metrics
    assert by_key["gate", 0.5].metrics != unpruned or by_key["random", 0.5].metrics != unpruned
    again = pruning_curve(model, batches, normalize, mean_gates, ratios, seed=0, progress=False)
    assert [p.metrics for p in again] == [p.metrics for p in points]
    assert not any(m._forward_hooks for m in modules.values())
    with pytest.raises(KeyError, match="no mean gate"):
        pruning_curve(model, batches, normalize, {}, ratios, progress=False)


def test_csv_round_trip_metrics_and_figures() -> None:
    points = [
        PruningPoint("gate", 0.0, 0, 10, {"acc_mean": 0.5, "acc/A": 0.25, "acc/B": 0.75}),
        PruningPoint("gate", 0.3, 3, 10, {"acc_mean": 0.4, "acc/A": 0.2, "acc/B": 0.6}),
        PruningPoint("random", 0.3, 3, 10, {"acc_mean": 0.1 + 0.2, "acc/A": 0.1, "acc/B": 0.5}),
    ]
    text = points_to_csv(points)
    assert text.splitlines()[0] == (
        "rule,ratio,step,pruned_channels,total_channels,acc_mean,acc/A,acc/B"
    )
    assert points_from_csv(text) == points  # values written with repr: exact
    assert mlflow_metrics(points[1]) == {
        "prune/gate/acc_mean": as_logged(0.4),
        "prune/gate/acc/A": as_logged(0.2),
        "prune/gate/acc/B": as_logged(0.6),
    }
    assert points[1].step == 30
    figure = accuracy_vs_ratio_figure(points, title="t")
    assert isinstance(figure, Figure)
    mean_axes, domain_axes = figure.axes
    assert len(mean_axes.lines) == 2 and len(domain_axes.lines) == 4
    overlay = overlay_figure({"srm": points, "se": points})
    assert len(overlay.axes[0].lines) == 4
