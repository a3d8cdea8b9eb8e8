"""`python -m experiments.model_summary`: printed counts match counts made independently."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from experiments.model_summary import main
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
