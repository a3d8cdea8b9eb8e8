"""MS-SAR: Multi-Scale Spatially-Asymmetric Recalibration, in this project's reading.

Wang, Xie, Qiao, Zhang, Zhang and Yuille, "Multi-Scale Spatially-Asymmetric Recalibration for
Image Classification", ECCV 2018, arXiv:1804.00787.

What the paper states: each neuron's importance is computed from its surrounding region (a
"coordinate set" covering the neuron) at several scales; the weighting over that region is
spatially asymmetric (one weight per relative position, unlike symmetric pooling); the
importance multiplies the response; the module adds only small fractions of parameters and
computation, and is applied to residual and densely-connected blocks (CIFAR, ILSVRC2012).

No public implementation is known and the full formulas were not available, so this module is
the project's own formulation of that description. For each scale s of a configurable set
(default {1, 2, 4}):

    a_s = upsample_to(H, W)( DepthwiseConv3x3_s( AvgPool(kernel=s, stride=s)(x) ) )
    g   = sigmoid( BN( sum over s of a_s ) )
    out = x * g

`DepthwiseConv3x3_s` is a depthwise 3x3 convolution (padding 1, no bias, its own weights per
scale): its nine weights per channel are the asymmetric weighting of a neuron's neighbourhood,
and pooling by s first makes the same 3x3 window cover a region s times wider. Scale 1 skips the
pooling and the resizing; the pooling keeps partial border windows (ceil mode) and the resizing
is nearest-neighbour by default. Extra parameters per block: `9C * len(scales) + 2C` (the batch
norm's affine). Options: `scales` (the set above), `upsample_mode`, and `gate_init`, the initial
gamma of the batch norm (1). Results obtained with it are results of this formulation, not a
reproduction of the paper's numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lightning_modules.models.recalibration.base import RecalibrationModule, check_gate_init

DEFAULT_SCALES = (1, 2, 4)


class MultiScaleSpatiallyAsymmetricRecalibration(RecalibrationModule):
    """MS-SAR as read by this project: a sigmoid gate from multi-scale depthwise 3x3 responses.

    Extra parameters: `9C` per scale (no convolution biases, since batch norm follows) `+ 2C`.
    All of them are weight-decayed (the default `no_weight_decay`): the paper states no
    exemption, so the standard recipe applies.
    """

    def __init__(
        self,
        channels: int,
        scales: Sequence[int] = DEFAULT_SCALES,
        upsample_mode: str = "nearest",
        gate_init: float = 1.0,
    ) -> None:
        """Build one depthwise 3x3 convolution per scale and the shared batch norm.

        Args:
            channels: Number of channels C of the feature map it recalibrates.
            scales: Pooling factors s, one branch each; 1 means no pooling.
            upsample_mode: `F.interpolate` mode that brings a pooled branch back to (H, W).
            gate_init: Initial gamma of the batch norm before the sigmoid (1: PyTorch's
                default).
        """
        super().__init__(channels)
        check_gate_init(type(self).__name__, gate_init)
        scales = tuple(scales)
        if not scales or len(set(scales)) != len(scales) or min(scales) < 1:
            raise ValueError(f"MS-SAR scales must be distinct positive integers, got {scales}.")
        self.scales = scales
        self.upsample_mode = upsample_mode
        self.depthwise_convs = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False) for _ in scales
        )
        self.bn = nn.BatchNorm2d(channels)
        nn.init.constant_(self.bn.weight, gate_init)

    def forward(self, x: Tensor) -> Tensor:
        """Recalibrate a (B, C, H, W) feature map; the output has the same shape."""
        size = x.shape[-2:]
        importance: Tensor | None = None
        for scale, depthwise_conv in zip(self.scales, self.depthwise_convs, strict=True):
            if scale == 1:
                response = depthwise_conv(x)
            else:
                # ceil_mode keeps the border rows and columns that do not fill a whole window
                # (a 7x7 map pooled by 4 gives 2x2, not 1x1) and a map smaller than s gives 1x1
                # instead of an error; partial windows average over their valid positions.
                pooled = F.avg_pool2d(x, scale, scale, ceil_mode=True)
                response = F.interpolate(depthwise_conv(pooled), size=size, mode=self.upsample_mode)
            importance = response if importance is None else importance + response
        return x * torch.sigmoid(self.bn(importance))
