"""The recalibration modules on their own: formulas, factory, parameter counts, gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lightning_modules.models.recalibration import (
    RECALIBRATION_MODULES,
    MultiScaleSpatiallyAsymmetricRecalibration,
    StyleRecalibration,
    create_recalibration,
    srm_gate_reference,
)

MODULE_NAMES = [name for name in RECALIBRATION_MODULES if name != "none"]


def build(name: str, channels: int = 32, feature_size: int = 6, **options) -> nn.Module:
    kwargs = {"feature_size": (feature_size, feature_size)} if name.startswith("ge") else {}
    return create_recalibration(name, channels, **kwargs, **options)


def srm_by_hand(x, cfc_weight, gamma, beta, mean_for_bn=None, var_for_bn=None, bn_eps=1e-5):
    """SRM written with explicit sums; batch statistics unless running ones are given."""
    batch, channels, height, width = x.shape
    positions = x.reshape(batch, channels, height * width)
    mean = positions.sum(-1) / (height * width)
    variance = ((positions - mean[..., None]) ** 2).sum(-1) / (height * width - 1)
    std = torch.sqrt(variance + 1e-5)
    z = cfc_weight[:, 0] * mean + cfc_weight[:, 1] * std
    if mean_for_bn is None:
        mean_for_bn, var_for_bn = z.mean(0), ((z - z.mean(0)) ** 2).mean(0)
    normalized = (z - mean_for_bn) / torch.sqrt(var_for_bn + bn_eps) * gamma + beta
    return x * torch.sigmoid(normalized)[:, :, None, None], z


def randomize_srm(srm: StyleRecalibration) -> None:
    with torch.no_grad():
        srm.cfc.weight.normal_()
        srm.bn.weight.uniform_(0.5, 1.5)
        srm.bn.bias.normal_(0, 0.1)


def test_srm_matches_its_formula_in_train_mode() -> None:
    torch.manual_seed(0)
    srm = StyleRecalibration(8).train()
    randomize_srm(srm)
    x = torch.randn(4, 8, 5, 7)
    expected, _ = srm_by_hand(x, srm.cfc.weight, srm.bn.weight, srm.bn.bias)
    torch.testing.assert_close(srm(x), expected)


def test_srm_matches_its_formula_in_eval_mode_with_running_statistics() -> None:
    torch.manual_seed(1)
    srm = StyleRecalibration(8).train()
    randomize_srm(srm)
    running_mean, running_var = torch.zeros(8), torch.ones(8)
    momentum = srm.bn.momentum
    for _ in range(3):
        x = torch.randn(4, 8, 5, 7) * 2 + 1
        srm(x)
        _, z = srm_by_hand(x, srm.cfc.weight, srm.bn.weight, srm.bn.bias)
        # Running variance tracks the unbiased batch variance.
        running_mean = (1 - momentum) * running_mean + momentum * z.mean(0)
        running_var = (1 - momentum) * running_var + momentum * z.var(0, unbiased=True)
    torch.testing.assert_close(srm.bn.running_mean, running_mean)
    torch.testing.assert_close(srm.bn.running_var, running_var)

    srm.eval()
    x = torch.randn(4, 8, 5, 7)
    expected, _ = srm_by_hand(
        x, srm.cfc.weight, srm.bn.weight, srm.bn.bias, running_mean, running_var
    )
    torch.testing.assert_close(srm(x), expected)
    torch.testing.assert_close(x * srm_gate_reference(x, srm.cfc.weight, srm.bn), expected)


def test_srm_starts_at_half_gates_and_has_four_c_parameters() -> None:
    srm = StyleRecalibration(16)
    assert sum(p.numel() for p in srm.parameters()) == 4 * 16
    assert srm.cfc.weight.shape == (16, 2)
    assert not srm.cfc.weight.any()
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(srm.eval()(x), x * 0.5)
    assert srm.no_weight_decay() == {"cfc.weight", "bn.weight", "bn.bias"}


def test_srm_single_position_gives_no_nan() -> None:
    srm = StyleRecalibration(4).train()
    assert torch.isfinite(srm(torch.randn(2, 4, 1, 1))).all()


def test_mssar_matches_its_formula() -> None:
    torch.manual_seed(2)
    module = MultiScaleSpatiallyAsymmetricRecalibration(4, scales=(1, 2)).eval()
    with torch.no_grad():
        module.bn.running_mean.normal_()
        module.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 6, 6)
    full, half = module.depthwise_convs
    summed = full(x) + F.interpolate(half(F.avg_pool2d(x, 2)), size=(6, 6), mode="nearest")
    torch.testing.assert_close(module(x), x * torch.sigmoid(module.bn(summed)))
    assert sum(p.numel() for p in module.parameters()) == 4 * 9 * 2 + 2 * 4


@pytest.mark.parametrize(
    ("name", "extra_parameters"),
    [
        ("se", 2 * 32 * 2 + 2 + 32),
        ("srm", 4 * 32),
        ("ge_minus", 0),
        ("ge", 32 * 6 * 6 + 2 * 32),  # the GE authors' gather: no bias
        ("ge_plus", 32 * 6 * 6 + 2 * 32 + 2 * 32 * 2 + 2 + 32),
        ("mssar", 32 * 9 * 3 + 2 * 32),
    ],
)
def test_parameter_count_per_module(name: str, extra_parameters: int) -> None:
    assert sum(p.numel() for p in build(name).parameters()) == extra_parameters
    if name in ("ge", "ge_plus"):  # the SRM authors' gather adds a bias per channel
        srm_authors = build(name, definition="srm")
        assert sum(p.numel() for p in srm_authors.parameters()) == extra_parameters + 32


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_module_gates_its_input_and_passes_gradients(name: str) -> None:
    torch.manual_seed(3)
    module = build(name).train()
    x = torch.randn(2, 32, 6, 6, requires_grad=True)
    out = module(x)
    assert out.shape == x.shape
    # A gate in (0, 1) scales each response towards zero without flipping its sign.
    assert (out.abs() <= x.abs()).all() and (out * x >= 0).all()
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    for parameter_name, parameter in module.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
    assert module.no_weight_decay() <= dict(module.named_parameters()).keys()


@pytest.mark.parametrize("name", ["ge_minus", "ge", "ge_plus"])
@pytest.mark.parametrize("extent", [2, 4, 8])
def test_gather_excite_limited_extent_works_at_any_size(name: str, extent: int) -> None:
    module = create_recalibration(name, 8, extent=extent).train()
    for size in (5, 16):
        x = torch.randn(2, 8, size, size)
        assert module(x).shape == x.shape


def gather_with_gradients(gather, conv: nn.Conv2d, x: torch.Tensor, grad: torch.Tensor):
    """Output of `gather(x)` and the gradients of x and of the convolution's parameters."""
    inputs = x.clone().requires_grad_()
    gathered = gather(inputs)
    gathered.backward(grad)
    bias = None if conv.bias is None else conv.bias.grad
    return gathered, inputs.grad, conv.weight.grad, bias


@pytest.mark.parametrize("name", ["ge", "ge_plus"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("definition", ["ge", "srm"])
def test_global_gather_equals_its_depthwise_convolution(
    name: str, training: bool, definition: str
) -> None:
    torch.manual_seed(0)
    module = build(name, channels=8, feature_size=5, definition=definition)
    module = module.double().train(training)
    if definition == "srm":
        with torch.no_grad():
            module.gather.conv.bias.normal_()
    reference = copy.deepcopy(module)
    x = torch.randn(3, 8, 5, 5, dtype=torch.float64) * 2 + 0.5
    grad = torch.randn(3, 8, 1, 1, dtype=torch.float64)
    fast = gather_with_gradients(module.global_gather, module.gather.conv, x, grad)
    convolution = gather_with_gradients(reference.gather, reference.gather.conv, x, grad)
    for actual, expected in zip(fast, convolution, strict=True):
        torch.testing.assert_close(actual, expected)
    torch.testing.assert_close(module.state_dict(), reference.state_dict())


def test_gather_excite_global_extent_rejects_another_size() -> None:
    module = build("ge", feature_size=6)
    with pytest.raises(ValueError, match=r"built for 6x6 feature maps but got 7x7"):
        module(torch.randn(2, 32, 7, 7))
    with pytest.raises(ValueError, match="feature_size"):
        create_recalibration("ge", 32)


def test_factory_none_unknown_and_bad_arguments() -> None:
    assert isinstance(create_recalibration("none", 8), nn.Identity)
    assert isinstance(create_recalibration(None, 8), nn.Identity)
    with pytest.raises(ValueError, match=r"'cbam'.*none, se, srm, ge_minus, ge, ge_plus, mssar"):
        create_recalibration("cbam", 8)
    with pytest.raises(ValueError, match="extent"):
        create_recalibration("ge_minus", 8, extent=3)
    with pytest.raises(ValueError, match="scales"):
        create_recalibration("mssar", 8, scales=(2, 2))
