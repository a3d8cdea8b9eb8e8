"""Parameters and multiply-accumulates of a recalibrated backbone, against the plain one.

    python -m experiments.model_summary --backbone resnet50 --recalibration srm [--image-size 224]
        [--option pooling=avg --option gate_init=0.1]

Both counts include a 1000-class linear classifier, so parameter counts compare directly with
the published ImageNet figures (ResNet-50: 25,557,032; SRM-ResNet-50: 25,617,448). `--option`
sets the module's options (`recalibration_kwargs`), one `key=value` each (values in YAML).

Stride placement: torchvision's Bottleneck, which the backbones here follow, strides its 3x3
convolution ("ResNet v1.5"); the ResNet paper's network strides the first 1x1 convolution
("v1"), which leaves the parameters unchanged but costs fewer MACs (the 3x3 then runs on the
subsampled map). The papers' MAC figures are of v1 (ResNet-50: 3.86 G, quoted as 3.8 x 10^9
FLOPs; torchvision's v1.5: 4.09 G), so for bottleneck backbones both are printed.
"""

from __future__ import annotations

import argparse
import copy
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.resnet import Bottleneck

from lightning_modules.models.backbones import BACKBONES, create_backbone
from lightning_modules.models.recalibration import RECALIBRATION_MODULES

NUM_CLASSES = 1000
MAC_CONVENTION = (
    "MACs for one image: multiply-accumulates of convolutions and linear layers (FLOPs of "
    "torch.utils.flop_counter.FlopCounterMode / 2), plus 1 per element of every elementwise "
    "product (the gate x * g, SRM's CFC) and 1 per summed element of every mean and average "
    "pooling (2 for a mean-and-variance). Not counted: batch norm, activations, sigmoid, "
    "additions, resizing."
)
STRIDE_CONVENTION = (
    "v1.5: stride in each bottleneck's 3x3 convolution (torchvision's, the network built here); "
    "v1: stride in its first 1x1 convolution (the ResNet, SE and SRM papers' network), counted "
    "on a copy with the strides moved; same parameters."
)


def _summed_elements(input_shape, *args, out_shape=None, **kwargs) -> int:
    # A mean reads every input element once.
    return math.prod(input_shape)


def _mean_and_variance_elements(input_shape, *args, out_shape=None, **kwargs) -> int:
    # One pass accumulates both the sum and the sum of squares of every input element.
    return 2 * math.prod(input_shape)


def _product_elements(*args, out_shape=None, **kwargs) -> int:
    return math.prod(out_shape)


def _pooled_elements(input_shape, kernel_size, *args, out_shape=None, **kwargs) -> int:
    # Each output sums one window (border windows are counted whole: an upper bound). A single
    # kernel size means a square window.
    window = kernel_size[0] ** 2 if len(kernel_size) == 1 else math.prod(kernel_size)
    return math.prod(out_shape) * window


def _as_flops(count_macs):
    # FlopCounterMode reports FLOPs (2 per MAC for convolutions and matrix products); these
    # formulas count MACs, so they are doubled here and the total is halved once at the end.
    def flops(*args, **kwargs) -> int:
        return 2 * count_macs(*args, **kwargs)

    return flops


aten = torch.ops.aten
ELEMENTWISE_MAC_FORMULAS = {
    aten.mean: _as_flops(_summed_elements),
    aten.var_mean: _as_flops(_mean_and_variance_elements),
    aten.mul: _as_flops(_product_elements),
    aten.avg_pool2d: _as_flops(_pooled_elements),
}


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of `model`."""
    return sum(parameter.numel() for parameter in model.parameters())


def count_macs(model: nn.Module, image_size: int) -> int:
    """Multiply-accumulates of one forward pass on one image, by `MAC_CONVENTION`."""
    model.eval()
    image = torch.zeros(1, 3, image_size, image_size)
    with (
        torch.no_grad(),
        FlopCounterMode(display=False, custom_mapping=ELEMENTWISE_MAC_FORMULAS) as counter,
    ):
        model(image)
    return counter.get_total_flops() // 2


def with_stride_in_first_conv(model: nn.Module) -> nn.Module | None:
    """A copy of `model` with every strided Bottleneck's stride moved from conv2 to conv1 ("v1").

    A 1x1 convolution with stride s and a padded 3x3 one with stride s give maps of the same
    size, so the copy computes on the same shapes after each block.

    Returns:
        The copy, or None when no Bottleneck strides its 3x3 convolution (nothing to move).
    """
    if not any(isinstance(m, Bottleneck) and m.conv2.stride != (1, 1) for m in model.modules()):
        return None
    v1 = copy.deepcopy(model)
    for module in v1.modules():
        if isinstance(module, Bottleneck) and module.conv2.stride != (1, 1):
            module.conv1.stride, module.conv2.stride = module.conv2.stride, (1, 1)
    return v1


def build_classifier(
    backbone: str,
    recalibration: str,
    image_size: int,
    options: Mapping[str, Any] | None = None,
) -> nn.Sequential:
    """The backbone followed by a 1000-class linear classifier, randomly initialised.

    SRM is built with its reference formula rather than the fused kernel: the count is of the
    arithmetic the module defines, and the fused autograd function hides its ops from the
    counter.

    Args:
        backbone: A registered backbone name.
        recalibration: A registered module name.
        image_size: Input resolution.
        options: The module's options (`recalibration_kwargs`).
    """
    kwargs = dict(options or {})
    if recalibration == "srm":
        kwargs["fused"] = False
    features = create_backbone(
        backbone, recalibration, image_size=image_size, recalibration_kwargs=kwargs or None
    )
    return nn.Sequential(features, nn.Linear(features.feature_dim, NUM_CLASSES))


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """["pooling=avg", "scales=[1, 2]"] -> {"pooling": "avg", "scales": [1, 2]} (YAML values)."""
    options = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise SystemExit(f"--option {pair!r}: expected key=value, e.g. --option pooling=avg")
        options[key.strip()] = yaml.safe_load(value)
    return options


def format_overhead(value: int, baseline: int) -> str:
    """`+60,416 (+0.24%)`: the difference against the baseline, absolute and relative."""
    return f"{value - baseline:+,} ({100 * (value - baseline) / baseline:+.2f}%)"


def main(argv: Sequence[str] | None = None) -> None:
    """Print the counts of `--backbone` with `--recalibration` and of the plain backbone."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.model_summary", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--backbone", required=True, choices=list(BACKBONES))
    parser.add_argument("--recalibration", default="srm", choices=list(RECALIBRATION_MODULES))
    parser.add_argument(
        "--image-size", type=int, default=224, help="input resolution in pixels (default: 224)"
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a module option (recalibration_kwargs), e.g. pooling=avg (repeatable)",
    )
    args = parser.parse_args(argv)
    options = parse_options(args.option)

    counts = {}
    for recalibration in dict.fromkeys([args.recalibration, "none"]):
        model = build_classifier(
            args.backbone,
            recalibration,
            args.image_size,
            options if recalibration == args.recalibration else None,
        )
        v1 = with_stride_in_first_conv(model)
        counts[recalibration] = (
            count_parameters(model),
            count_macs(model, args.image_size),
            None if v1 is None else count_macs(v1, args.image_size),
        )
    parameters, macs, v1_macs = counts[args.recalibration]
    plain_parameters, plain_macs, plain_v1_macs = counts["none"]

    rows = [
        ("", args.recalibration, "none", "overhead"),
        (
            "parameters",
            f"{parameters:,}",
            f"{plain_parameters:,}",
            format_overhead(parameters, plain_parameters),
        ),
        ("MACs", f"{macs:,}", f"{plain_macs:,}", format_overhead(macs, plain_macs)),
    ]
    if v1_macs is not None:
        rows[-1] = ("MACs (v1.5)", *rows[-1][1:])
        rows.append(
            (
                "MACs (v1)",
                f"{v1_macs:,}",
                f"{plain_v1_macs:,}",
                format_overhead(v1_macs, plain_v1_macs),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    module = args.recalibration
    described = ", ".join(f"{key}={value!r}" for key, value in options.items())
    print(
        f"{args.backbone} + {module}{f' ({described})' if described else ''}, "
        f"{args.image_size}x{args.image_size} input, {NUM_CLASSES}-class linear classifier"
    )
    for label, *values in rows:
        cells = [value.rjust(width) for value, width in zip(values, widths[1:], strict=True)]
        print(f"  {label.ljust(widths[0])}  " + "  ".join(cells))
    print(textwrap.fill(MAC_CONVENTION, width=100))
    if v1_macs is not None:
        print(textwrap.fill(STRIDE_CONVENTION, width=100))


if __name__ == "__main__":
    from experiments.errors import run_main

    run_main(main)
