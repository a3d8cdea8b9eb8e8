"""Gather-Excite in its three forms: theta-minus, theta and theta-plus.

Hu, Shen, Albanie, Sun and Vedaldi, "Gather-Excite: Exploiting Feature Context in Convolutional
Neural Networks", NeurIPS 2018, arXiv:1810.12348.

A gather operator aggregates each channel over a spatial extent (the whole map by default); the
excite operator resizes the gathered map back to the input's size and turns it into a sigmoid
gate. Theta-minus gathers by average pooling (no parameters); theta gathers with a learned
depthwise convolution followed by batch norm; theta-plus adds a ReLU and an SE-style MLP after
the gather. As in the authors' model definitions (GE-theta: gather convolution and batch norm,
then the sigmoid; GE-theta-plus: gather convolution, batch norm and ReLU, then the MLP), and
with the gather convolutions initialised as the official SRM code initialises its GE models:
normal(0, sqrt(2 / (k_h k_w C))) for a k_h x k_w kernel over C channels (std 1.6e-3 in layer1
and 4.5e-3 in layer4 of a 224-px ResNet-50, where PyTorch's default would start 6-18x larger).

Options: `extent` (2, 4, 8 or 0 = global, the paper's extent ablation), `reduction` of
theta-plus's MLP, and `gate_init`, the initial scale of the gate (theta: the gather batch
norm's gamma; theta-plus: the MLP's last layer).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lightning_modules.models.recalibration.base import (
    RecalibrationModule,
    check_gate_init,
    scale_initial_weights,
)
from lightning_modules.models.recalibration.squeeze_excite import ExcitationMLP

GLOBAL_EXTENT = 0
LIMITED_EXTENTS = (2, 4, 8)


class GatherExcite(RecalibrationModule):
    """Gather-Excite; the subclasses below fix the form through two class attributes.

    Global-extent theta and theta-plus gather with a depthwise convolution whose kernel covers the
    whole feature map, so they are tied to the feature size they were built for (their
    `fixed_feature_size`): a different size raises a ValueError naming both (no silent
    adaptation, which would change what the learned kernel means). Theta-minus and the limited
    extents work at any size. Every parameter is weight-decayed (the default
    `no_weight_decay`), as in the GE paper.
    """

    # The backbone passes the feature size of the stage the module sits in.
    uses_feature_size: ClassVar[bool] = True
    # Gather with depthwise convolutions (theta) instead of average pooling (theta-minus).
    learned_gather: ClassVar[bool] = True
    # Apply an SE-style MLP to the gathered map before the sigmoid (theta-plus).
    excite_mlp: ClassVar[bool] = False

    def __init__(
        self,
        channels: int,
        feature_size: int | tuple[int, int] | None = None,
        extent: int = GLOBAL_EXTENT,
        reduction: int = 16,
        gate_init: float = 1.0,
    ) -> None:
        """Build the gather and excite operators.

        Args:
            channels: Number of channels C of the feature map it recalibrates.
            feature_size: (H, W) of that feature map; required by a global-extent learned gather
                (theta, theta-plus), accepted and unused otherwise. Set by the backbone.
            extent: 0 gathers over the whole map; 2, 4 or 8 over that many positions per side.
            reduction: Bottleneck ratio of theta-plus's MLP (16); unused by theta.
            gate_init: Initial scale of the gate (1: the paper's initialisation): theta's
                gather batch norm starts with this gamma; theta-plus's MLP's last layer starts
                at PyTorch's default initialisation times this.
        """
        super().__init__(channels)
        check_gate_init(type(self).__name__, gate_init)
        if extent != GLOBAL_EXTENT and extent not in LIMITED_EXTENTS:
            raise ValueError(
                f"Gather-Excite extent must be {GLOBAL_EXTENT} (global) or one of "
                f"{LIMITED_EXTENTS}, got {extent}."
            )
        self.extent = extent
        self.gather: nn.Sequential | None = None
        if self.learned_gather and extent == GLOBAL_EXTENT:
            if feature_size is None:
                raise ValueError(
                    f"{type(self).__name__} with global extent needs the feature size, "
                    "feature_size=(H, W), to size its kernel; or pass a limited extent (2, 4, 8)."
                )
            if isinstance(feature_size, int):
                feature_size = (feature_size, feature_size)
            self.fixed_feature_size = tuple(feature_size)
            self.gather = nn.Sequential()
            # The bias is redundant before batch norm, but it is part of the published model:
            # GE-theta-ResNet-50 has 31.12M parameters with it and 31.11M without.
            self.gather.conv = nn.Conv2d(
                channels, channels, self.fixed_feature_size, groups=channels, bias=True
            )
            self.gather.bn = nn.BatchNorm2d(channels)
        elif self.learned_gather:
            # Each stride-2 depthwise 3x3 convolution halves the map: log2(extent) of them
            # gather over `extent` positions per side. Same convolution form as the global
            # gather (bias, then batch norm).
            self.gather = nn.Sequential()
            num_convs = int(math.log2(extent))
            for index in range(1, num_convs + 1):
                self.gather.add_module(
                    f"conv{index}",
                    nn.Conv2d(
                        channels, channels, 3, stride=2, padding=1, groups=channels, bias=True
                    ),
                )
                self.gather.add_module(f"bn{index}", nn.BatchNorm2d(channels))
                if index < num_convs:
                    self.gather.add_module(f"relu{index}", nn.ReLU(inplace=True))
        if self.gather is not None:
            self._initialise_gather(gate_init)
        self.mlp = ExcitationMLP(channels, reduction) if self.excite_mlp else nn.Identity()
        if self.excite_mlp:
            scale_initial_weights(self.mlp.fc2, gate_init)

    def _initialise_gather(self, gate_init: float) -> None:
        # The official SRM code's initialisation of every convolution, normal(0, sqrt(2 / n))
        # with n = k_h * k_w * out_channels: PyTorch's default for a depthwise kernel (uniform
        # with bound 1 / sqrt(k_h k_w)) starts 6-18x larger. Biases keep PyTorch's default:
        # the batch norm that follows removes them in training.
        batch_norms = []
        for layer in self.gather:
            if isinstance(layer, nn.Conv2d):
                fan_out = layer.out_channels * math.prod(layer.kernel_size)
                nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(layer, nn.BatchNorm2d):
                batch_norms.append(layer)
        if not self.excite_mlp:
            # Theta's gate is sigmoid(last gather BN): its gamma is the gate's initial scale.
            nn.init.constant_(batch_norms[-1].weight, gate_init)

    def forward(self, x: Tensor) -> Tensor:
        """Recalibrate a (B, C, H, W) feature map; the output has the same shape."""
        size = tuple(x.shape[-2:])
        if self.fixed_feature_size is not None and size != self.fixed_feature_size:
            built_h, built_w = self.fixed_feature_size
            raise ValueError(
                f"{type(self).__name__} with global extent was built for {built_h}x{built_w} "
                f"feature maps but got {size[0]}x{size[1]}: its gather kernel spans the whole "
                "map. Rebuild the backbone with image_size equal to the input resolution, or use "
                "a limited extent (recalibration_kwargs={'extent': 8})."
            )
        if self.fixed_feature_size is not None:
            gathered = self.global_gather(x)
        elif self.gather is not None:
            gathered = self.gather(x)
        elif self.extent == GLOBAL_EXTENT or min(size) <= self.extent:
            # A map no larger than the extent lies inside one pooling window: gather it whole
            # (pooling would give that same mean, or fail on maps smaller than the window).
            gathered = x.mean(dim=(2, 3), keepdim=True)
        else:
            # Overlapping windows of 2 * extent - 1 positions centred every `extent` positions.
            gathered = F.avg_pool2d(
                x, 2 * self.extent - 1, self.extent, self.extent // 2, count_include_pad=False
            )
        if self.excite_mlp:
            # GE-theta-plus: ReLU after the gather's batch norm, then the MLP (as the authors'
            # model definition has it).
            gathered = self.mlp(F.relu(gathered))
        # A global gather is (B, C, 1, 1) and broadcasts; a limited one is resized back.
        if gathered.shape[-2:] != (1, 1):
            gathered = F.interpolate(gathered, size=size, mode="nearest")
        return x * torch.sigmoid(gathered)

    def global_gather(self, x: Tensor) -> Tensor:
        """The global-extent learned gather, `gather.bn(gather.conv(x))`, computed faster.

        A depthwise kernel as large as the map has one output position: a dot product of each
        (sample, channel) map with its channel's kernel, plus the bias. `einsum` computes exactly
        that, with the convolution's own parameters, 3-4x faster on the CPU than the
        convolution (forward + backward at 224 px: 42 vs 158 ms on a 56x56 ResNet-50 stage).
        """
        conv = self.gather.conv
        response = torch.einsum("bchw,chw->bc", x, conv.weight[:, 0]) + conv.bias
        return self.gather.bn(response[:, :, None, None])


class GatherExciteThetaMinus(GatherExcite):
    """GE-theta-minus: average-pooling gather, sigmoid excite; no parameters."""

    learned_gather = False

    def __init__(
        self,
        channels: int,
        feature_size: int | tuple[int, int] | None = None,
        extent: int = GLOBAL_EXTENT,
    ) -> None:
        """Build the parameter-free gather and excite.

        Args:
            channels: Number of channels C of the feature map it recalibrates.
            feature_size: (H, W) of that feature map; accepted and unused (set by the backbone).
            extent: 0 gathers over the whole map; 2, 4 or 8 over that many positions per side.
        """
        super().__init__(channels, feature_size, extent)


class GatherExciteTheta(GatherExcite):
    """GE-theta: depthwise convolution (with bias) -> BN gather, sigmoid excite.

    The form the SRM paper compares against. Extra parameters at global extent:
    `C * H * W + C` (convolution) `+ 2C` (batch norm).
    """


class GatherExciteThetaPlus(GatherExcite):
    """GE-theta-plus: GE-theta's gather, a ReLU, an SE-style MLP (C -> C/16 -> C), sigmoid.

    `x * sigmoid(MLP(ReLU(BN(conv(x)))))`, resized back for a limited extent.
    """

    excite_mlp = True
