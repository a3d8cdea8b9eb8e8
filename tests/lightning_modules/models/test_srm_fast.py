"""The fused SRM path against the reference formula: forward, gradients and running statistics."""

from __future__ import annotations

import copy

import pytest
import torch

from benchmarks.step_time import saved_tensor_bytes
from lightning_modules.models.backbones import create_backbone
from lightning_modules.models.recalibration.srm import StyleRecalibration


def make_pair(channels: int, dtype: torch.dtype) -> tuple[StyleRecalibration, StyleRecalibration]:
    """A fused SRM with random (not initial) parameters and its reference twin."""
    torch.manual_seed(0)
    fused = StyleRecalibration(channels).to(dtype)
    with torch.no_grad():
        fused.cfc.weight.normal_()
        fused.bn.weight.uniform_(0.5, 1.5)
        fused.bn.bias.normal_(0, 0.1)
        fused.bn.running_mean.normal_(0, 0.1)
        fused.bn.running_var.uniform_(0.5, 1.5)
    reference = copy.deepcopy(fused)
    reference.fused = False
    return fused, reference


def run(module: StyleRecalibration, x: torch.Tensor, grad: torch.Tensor):
    """Output, input gradient and parameter gradients of one forward + backward."""
    x = x.clone().requires_grad_()
    module.zero_grad(set_to_none=True)
    out = module(x)
    out.backward(grad)
    return out, x.grad, [p.grad for p in module.parameters()]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("size", [(3, 5, 7, 6), (2, 4, 1, 1), (4, 3, 2, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_srm_matches_reference(dtype, training, size, channels_last) -> None:
    fused, reference = make_pair(size[1], dtype)
    fused.train(training)
    reference.train(training)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(size, dtype=dtype, generator=generator) * 2 + 0.5
    grad = torch.randn(size, dtype=dtype, generator=generator)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out, grad_x, grad_params = run(fused, x, grad)
    expected, expected_grad_x, expected_grad_params = run(reference, x, grad)
    # float64 checks the algebra to the default tight tolerance; in float32 the parameter
    # gradients are reductions summed in another order (about 100 ulp apart).
    tolerance = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {}
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(grad_x, expected_grad_x, **tolerance)
    for actual, wanted in zip(grad_params, expected_grad_params, strict=True):
        torch.testing.assert_close(actual, wanted, **tolerance)
    torch.testing.assert_close(fused.bn.running_mean, reference.bn.running_mean)
    torch.testing.assert_close(fused.bn.running_var, reference.bn.running_var)
    assert fused.bn.num_batches_tracked == reference.bn.num_batches_tracked


def test_fused_srm_passes_gradcheck() -> None:
    fused, _ = make_pair(3, torch.float64)
    x = torch.randn(4, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    # Eval mode keeps the batch norm a fixed function, so finite differences are well defined.
    fused.eval()
    assert torch.autograd.gradcheck(fused, (x,))


def test_fused_srm_without_autograd_matches_and_opt_out_flag() -> None:
    fused, reference = make_pair(6, torch.float32)
    x = torch.randn(2, 6, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), reference(x))
    assert StyleRecalibration(4).fused
    assert not StyleRecalibration(4, fused=False).fused


def saved_bytes(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd saves for the backward of `module(x)`, each storage once, no parameters."""
    parameters = {p.untyped_storage().data_ptr() for p in module.parameters()}
    return saved_tensor_bytes(lambda: module(x), parameters)


def make_block(name: str, fused: bool) -> torch.nn.Module:
    """The second block of `name`'s layer2 (an SRM block without a downsample), randomised."""
    torch.manual_seed(0)
    backbone = create_backbone(name, "srm", image_size=64, recalibration_kwargs={"fused": fused})
    block = backbone.layer2[1].double()
    with torch.no_grad():
        for module in block.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
        block.recalibration.cfc.weight.normal_()
    return block


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, relative: float) -> None:
    """`actual` within `relative` x the largest magnitude of `expected`, everywhere."""
    error = (actual.double() - expected.double()).abs().max()
    assert error <= relative * expected.abs().max(), (float(error), float(expected.abs().max()))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_block_with_batch_norm_fused_into_srm_matches_reference(name, channels_last, dtype) -> None:
    # The reference block always runs in float64, the truth a float32 fused block is held to.
    fused, reference = make_block(name, True).to(dtype), make_block(name, False)
    channels = fused.conv1.in_channels
    generator = torch.Generator().manual_seed(2)
    # Off-centre input: the fused path centres its sums on the batch mean itself.
    x = torch.randn(3, channels, 6, 5, dtype=torch.float64, generator=generator) * 2 + 0.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(3, channels, 6, 5, dtype=torch.float64, generator=generator)
    if dtype == torch.float64:
        check = torch.testing.assert_close
    else:
        # float32 rounding, relative to each tensor's scale; the reference formula itself run in
        # float32 lands as far from the float64 result (about 4e-5 on conv weight gradients).
        def check(actual, expected):
            assert_close_to_scale(actual, expected, 2e-4)

    for _ in range(2):  # twice: running statistics and num_batches_tracked keep matching
        out, grad_x, grad_params = run(fused, x.to(dtype), grad.to(dtype))
        expected, expected_grad_x, expected_grad_params = run(reference, x, grad)
        check(out, expected)
        check(grad_x, expected_grad_x)
        for actual, wanted in zip(grad_params, expected_grad_params, strict=True):
            check(actual, wanted)
        for key, wanted in reference.state_dict().items():
            check(fused.state_dict()[key], wanted)


def test_fused_batch_norm_path_passes_gradcheck() -> None:
    block = make_block("resnet18", True)
    bn, srm = block.bn2, block.recalibration
    x = torch.randn(4, bn.num_features, 3, 2, dtype=torch.float64, requires_grad=True)

    def function(x, *parameters):
        # Each evaluation moves the running statistics; gradients are of the batch-stat output.
        return srm.forward_after_batch_norm(x, bn)

    parameters = [bn.weight, bn.bias, srm.cfc.weight, srm.bn.weight, srm.bn.bias]
    assert torch.autograd.gradcheck(function, (x, *parameters))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_srm_block_saves_no_more_full_size_maps_than_a_plain_block(name) -> None:
    fused = make_block(name, True)
    reference = make_block(name, False)
    torch.manual_seed(0)
    plain = create_backbone(name, "none", image_size=64).layer2[1].double()
    x = torch.randn(4, fused.conv1.in_channels, 16, 16, dtype=torch.float64)
    plain_bytes = saved_bytes(plain, x)
    # Only per-channel and per-(sample, channel) tensors are added to what the plain block saves.
    assert saved_bytes(fused, x) - plain_bytes < x[:, :, 0, 0].numel() * 8 * 10
    # The reference path keeps the batch norm's output as well: one more full-size map.
    assert saved_bytes(reference, x) - plain_bytes >= x.numel() * 8


@pytest.mark.parametrize("hooked", ["bn", "srm", "bn_pre"])
def test_hooks_on_the_batch_norm_or_srm_take_the_unfused_path(hooked: str) -> None:
    # The fused path is skipped when a hook must see what it never materialises; it reads the
    # private `_forward_hooks` / `_forward_pre_hooks` dicts (no public query exists), and this
    # test fails loudly if torch renames them.
    fused, reference = make_block("resnet18", True), make_block("resnet18", False)
    calls = []
    target = fused.recalibration if hooked == "srm" else fused.bn2
    if hooked == "bn_pre":
        target.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape))
    else:
        target.register_forward_hook(lambda module, args, out: calls.append(out.shape))
    x = torch.randn(3, fused.conv1.in_channels, 6, 5, dtype=torch.float64)
    torch.testing.assert_close(fused(x), reference(x))
    assert len(calls) == 1
