"""`python -m experiments.model_summary`: printed counts match counts made independently."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from experiments.model_summary import main, with_stride_in_first_conv
from lightning_modules.models.backbones import create_backbone

# CIFAR ResNet-20 at 32 px: stages of 3 blocks with (channels, feature side) below.
RESNET20_STAGES = [(16, 32), (32, 16), (64, 8)]
BLOCKS_PER_STAGE = 3


def conv_and_linear_macs(model: nn.Module, image_size: int) -> int:
    """Multiply-accumulates of every convolution and linear layer, from forward hooks."""
    macs = []

    def count(module: nn.Module, args, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            kernel_macs = module.in_channels // module.groups * math.prod(module.kernel_size)
            macs.append(output.numel() * kernel_macs)
        elif isinstance(module, nn.Linear):
            macs.append(output.numel() * module.in_features)

    handles = [module.register_forward_hook(count) for module in model.modules()]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, image_size, image_size))
    for handle in handles:
        handle.remove()
    return sum(macs)


def printed_counts(output: str, label: str) -> list[int]:
    """The comma-grouped integers of the table row `label`, the overhead's sign kept."""
    row = next(line for line in output.splitlines() if line.strip().startswith(label))
    return [int(number.replace(",", "")) for number in re.findall(r"[+-]?\d[\d,]*(?=\s|$)", row)]


def test_model_summary_prints_parameters_and_macs_with_overhead(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main(["--backbone", "resnet20", "--recalibration", "srm", "--image-size", "32"])
    output = capsys.readouterr().out

    plain = nn.Sequential(create_backbone("resnet20", image_size=32), nn.Linear(64, 1000))
    plain_parameters = sum(p.numel() for p in plain.parameters())
    srm_parameters = plain_parameters + sum(4 * c * BLOCKS_PER_STAGE for c, _ in RESNET20_STAGES)
    # The plain network: convolutions, the classifier and the global average pool (64 x 8 x 8).
    plain_macs = conv_and_linear_macs(plain, 32) + 64 * 8 * 8
    # SRM per block: mean and variance (2 per element), the CFC (2C), the gate product (1 per
    # element).
    srm_overhead = sum(
        BLOCKS_PER_STAGE * (3 * channels * side * side + 2 * channels)
        for channels, side in RESNET20_STAGES
    )

    assert printed_counts(output, "parameters") == [
        srm_parameters,
        plain_parameters,
        srm_parameters - plain_parameters,
    ]
    assert printed_counts(output, "MACs") == [
        plain_macs + srm_overhead,
        plain_macs,
        srm_overhead,
    ]
    assert f"{srm_parameters:,}" in output  # digits grouped with commas
    overhead_percent = 100 * srm_overhead / plain_macs
    assert f"(+{overhead_percent:.2f}%)" in output
    assert "FlopCounterMode" in output and "Not counted" in output


def test_model_summary_rejects_unknown_backbone(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--backbone", "resnet152"])
    assert "invalid choice" in capsys.readouterr().err


def test_resnet50_prints_both_stride_placements_beside_the_papers_figure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """torchvision's v1.5 (stride in the 3x3) costs 4.09 GMACs at 224 px; the papers' v1
    (stride in the first 1x1) 3.86 G (ResNet paper: 3.8 x 10^9). Measured once: 4,089,284,608
    and 3,858,073,600; 0.1% still tells one placement from the other (6% apart)."""
    main(["--backbone", "resnet50", "--recalibration", "none"])
    output = capsys.readouterr().out
    (v15, _, overhead_v15) = printed_counts(output, "MACs (v1.5)")
    (v1, _, overhead_v1) = printed_counts(output, "MACs (v1)")
    assert v15 == pytest.approx(4.0893e9, rel=1e-3)
    assert v1 == pytest.approx(3.8581e9, rel=1e-3)
    assert overhead_v15 == overhead_v1 == 0
    assert printed_counts(output, "parameters")[0] == 25_557_032
    assert "v1.5: stride in each bottleneck's 3x3" in output and "first 1x1" in output


def test_v1_copy_moves_each_bottleneck_stride_and_keeps_the_model() -> None:
    model = create_backbone("resnet50", "srm", image_size=64)
    v1 = with_stride_in_first_conv(model)
    strided = [b for b in v1.modules() if isinstance(b, Bottleneck) and b.conv1.stride == (2, 2)]
    assert len(strided) == 3  # the first block of layer2, layer3 and layer4
    assert all(b.conv2.stride == (1, 1) for b in strided)
    assert model.layer2[0].conv2.stride == (2, 2)  # the original is untouched
    x = torch.randn(1, 3, 64, 64)
    assert v1.eval()(x).shape == model.eval()(x).shape
    # Basic blocks already stride their first convolution: nothing to count twice.
    assert with_stride_in_first_conv(create_backbone("resnet20", image_size=32)) is None


def test_model_summary_counts_a_module_variant(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--backbone", "resnet20", "--recalibration", "srm", "--image-size", "32"]
    main([*args, "--option", "pooling=avg", "--option", "gate_init=0.1"])
    output = capsys.readouterr().out
    # One statistic per channel: 3C per block instead of 4C.
    assert printed_counts(output, "parameters")[2] == sum(3 * c * 3 for c, _ in RESNET20_STAGES)
    assert "srm (pooling='avg', gate_init=0.1)" in output
    with pytest.raises(ValueError, match="no option 'pool'"):
        main([*args, "--option", "pool=avg"])
