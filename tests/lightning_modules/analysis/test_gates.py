"""GateRecorder: online per-domain / per-class gate statistics against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lightning_modules.analysis.gates import (
    GateRecorder,
    gate_from_ratio,
    mean_pairwise_cosine_distance,
    record_gates,
)
from lightning_modules.models.backbones import create_backbone
from lightning_modules.models.recalibration import RECALIBRATION_MODULES, create_recalibration

NUM_DOMAINS, NUM_CLASSES = 3, 4


def _tiny_backbone(name: str) -> nn.Module:
    torch.manual_seed(0)
    backbone = create_backbone("resnet20", name, image_size=16)
    with torch.no_grad():  # random, non-trivial gates (fresh SRM/GE gates are all 0.5)
        for parameter in backbone.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return backbone.eval()


def _batches(count: int = 3, size: int = 5):
    generator = torch.Generator().manual_seed(1)
    for _ in range(count):
        images = torch.randn(size, 3, 16, 16, generator=generator)
        labels = torch.randint(0, NUM_CLASSES, (size,), generator=generator)
        domains = torch.randint(0, NUM_DOMAINS, (size,), generator=generator)
        yield images, labels, domains


def _brute_force_gate(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per image and channel, the mean of y / x over the positions with x != 0, in a loop."""
    gates = np.full(x.shape[:2], np.nan)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            mask = np.abs(x[b, c]) > 1e-6
            if mask.any():
                gates[b, c] = np.mean(y[b, c][mask] / x[b, c][mask])
    return gates


@pytest.mark.parametrize("name", list(RECALIBRATION_MODULES))
def test_online_means_and_stds_equal_brute_force_for_every_module(name: str) -> None:
    backbone = _tiny_backbone(name)
    stored: dict[str, list] = {block: [] for block in backbone.recalibration_modules()}
    handles = [
        module.register_forward_hook(
            lambda m, i, o, block=block: stored[block].append(
                (i[0].clone().numpy(), o.clone().numpy())
            )
        )
        for block, module in backbone.recalibration_modules().items()
    ]
    all_labels, all_domains = [], []
    with GateRecorder(backbone, NUM_DOMAINS, NUM_CLASSES) as recorder, torch.no_grad():
        for images, labels, domains in _batches():
            backbone(images)
            recorder.update(labels, domains)
            all_labels.append(labels.numpy())
            all_domains.append(domains.numpy())
    for handle in handles:
        handle.remove()
    labels, domains = np.concatenate(all_labels), np.concatenate(all_domains)
    statistics = recorder.statistics()
    assert list(statistics) == list(backbone.recalibration_modules())
    for block, pairs in stored.items():
        gates = np.concatenate([_brute_force_gate(x, y) for x, y in pairs])
        block_stats = statistics[block]
        assert block_stats.channels == gates.shape[1]
        for groups, count, mean, std, size in (
            (domains, block_stats.count_by_domain, block_stats.mean_by_domain,
             block_stats.std_by_domain, NUM_DOMAINS),
            (labels, block_stats.count_by_class, block_stats.mean_by_class,
             block_stats.std_by_class, NUM_CLASSES),
        ):  # fmt: skip
            for group in range(size):
                members = gates[groups == group]
                assert count[group] == len(members)
                if len(members) == 0:
                    assert torch.isnan(mean[group]).all()
                    continue
                # undefined (NaN) gates are left out, channel by channel
                np.testing.assert_allclose(mean[group], np.nanmean(members, 0), 1e-6, 1e-7)
                np.testing.assert_allclose(std[group], np.nanstd(members, 0), 1e-5, 1e-6)
        np.testing.assert_allclose(block_stats.mean, np.nanmean(gates, 0), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(block_stats.std, np.nanstd(gates, 0), rtol=1e-5, atol=1e-6)
    if name == "none":
        assert all(torch.allclose(s.mean, torch.ones(1, dtype=torch.float64)) for s in
                   statistics.values())  # fmt: skip
    else:  # the modules gate: the gates are not the identity's 1
        assert any((s.mean - 1).abs().max() > 1e-3 for s in statistics.values())


def test_ratio_is_the_modules_own_gate_for_channelwise_modules() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 8, 5, 5)
    srm = create_recalibration("srm", 8, fused=False).eval()
    with torch.no_grad():
        srm.cfc.weight.normal_()
        expected = srm.gate(x)[:, :, 0, 0]
        np.testing.assert_allclose(gate_from_ratio(x, srm(x)), expected, rtol=1e-5)
        se = create_recalibration("se", 8, reduction=2).eval()
        expected = torch.sigmoid(se.mlp(x.mean(dim=(2, 3), keepdim=True)))[:, :, 0, 0]
        np.testing.assert_allclose(gate_from_ratio(x, se(x)), expected, rtol=1e-5)


def test_per_position_gates_are_averaged_over_positions() -> None:
    x = torch.ones(1, 1, 2, 2)
    gate = torch.tensor([0.2, 0.4, 0.6, 1.0]).reshape(1, 1, 2, 2)
    assert gate_from_ratio(x, x * gate).item() == pytest.approx(0.55)


class _ZeroFirstChannel(nn.Module):
    """A 'backbone' with one SE module whose input has channel 0 all zero for image 0."""

    def __init__(self) -> None:
        super().__init__()
        self.recalibration = create_recalibration("se", 4, reduction=2)

    def forward(self, x):
        x = x.clone()
        x[0, 0] = 0.0
        x[1, 1, 0, 0] = 0.0  # one zero position: skipped, the gate is still defined
        return self.recalibration(x)


def test_zero_inputs_are_skipped_and_all_zero_channels_are_undefined_and_excluded() -> None:
    torch.manual_seed(0)
    model = _ZeroFirstChannel().eval()
    with GateRecorder(model, 1, 2, keep_per_domain=10) as recorder, torch.no_grad():
        model(torch.randn(3, 4, 3, 3))
        recorder.update(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 0]))
    stats = recorder.statistics()["recalibration"]
    gates = recorder.per_image_gates()["recalibration"][0]
    assert torch.isnan(gates[0, 0]) and not torch.isnan(gates[1:, 0]).any()
    assert stats.undefined_by_domain[0].tolist() == [1, 0, 0, 0]
    assert stats.count_by_domain.tolist() == [3]
    assert stats.mean[0].item() == pytest.approx(gates[1:, 0].double().mean().item(), rel=1e-6)
    assert torch.isnan(stats.mean_by_class[0, 0])  # class 0's only image is undefined there
    assert not torch.isnan(stats.mean_by_class[1]).any()


def test_update_without_forward_and_hooks_removed_on_exit() -> None:
    backbone = _tiny_backbone("se")
    recorder = GateRecorder(backbone, NUM_DOMAINS, NUM_CLASSES)
    with recorder, pytest.raises(RuntimeError, match="call update"):
        recorder.update(torch.tensor([0]), torch.tensor([0]))
    assert all(not m._forward_hooks for m in backbone.recalibration_modules().values())


def test_keep_per_domain_caps_the_per_image_vectors() -> None:
    backbone = _tiny_backbone("srm")
    recorder = GateRecorder(backbone, NUM_DOMAINS, NUM_CLASSES, keep_per_domain=2)
    with recorder, torch.no_grad():
        for images, labels, domains in _batches(count=4, size=6):
            backbone(images)
            recorder.update(labels, domains)
    gates, domains, labels = recorder.per_image_gates()["layer1.0.recalibration"]
    assert gates.shape == (len(domains), 16) and len(labels) == len(domains)
    assert torch.bincount(domains, minlength=NUM_DOMAINS).tolist() == [2, 2, 2]


def test_record_gates_normalises_and_restores_training_mode() -> None:
    backbone = _tiny_backbone("se").train()
    calls = []

    def normalize(batch, index):
        calls.append(index)
        return batch

    statistics = record_gates(backbone, list(_batches()), normalize, NUM_DOMAINS, NUM_CLASSES,
                              progress=False)  # fmt: skip
    assert backbone.training and len(calls) == 3
    assert int(statistics["layer3.2.recalibration"].count_by_domain.sum()) == 15


def test_mean_pairwise_cosine_distance() -> None:
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [float("nan"), 1.0]])
    assert mean_pairwise_cosine_distance(vectors) == pytest.approx(2 / 3)
    assert np.isnan(mean_pairwise_cosine_distance(vectors[:1]))
