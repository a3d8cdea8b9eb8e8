"""Gather-Excite in its three forms: theta-minus, theta and theta-plus.

Hu, Shen, Albanie, Sun and Vedaldi, "Gather-Excite: Exploiting Feature Context in Convolutional
Neural Networks", NeurIPS 2018, arXiv:1810.12348.

A gather operator aggregates each channel over a spatial extent (the whole map by default); the
excite operator resizes the gathered map back to the input's size and turns it into a sigmoid
gate. Theta-minus gathers by average pooling (no parameters); theta gathers with a learned
depthwise convolution followed by batch norm; theta-plus adds a ReLU and an SE-style MLP after
the gather. As in the authors' model definitions (GE-theta: gather convolution and batch norm,
then the sigmoid; GE-theta-plus: gather convolution, batch norm and ReLU, then the MLP).

Two definitions of the gather convolutions (`definition`):
- `ge` (default): the GE authors' model definitions (hujie-frank/GENet prototxts): no bias,
  MSRA fan-in initialisation, normal(0, sqrt(2 / (k_h k_w))) for a depthwise k_h x k_w kernel.
  GE-theta-ResNet-50 then has 31,106,600 parameters (31.11M).
- `srm`: the SRM authors' re-implementation, the one the SRM paper's GE rows were measured
  with: a bias, and normal(0, sqrt(2 / (k_h k_w C))) over C channels (std 1.6e-3 in layer1 and
  4.5e-3 in layer4 of a 224-px ResNet-50). GE-theta-ResNet-50: 31,121,704 parameters (31.12M,
  the SRM paper's table).
The bias sits before a batch norm, so it changes the parameter count, not what the module can
compute; the initialisation changes the gather's effective learning rate.

A limited extent e gathers a ceil(H / e) x ceil(W / e) grid, as the GE paper's figure has it:
theta with log2(e) stride-2 depthwise 3x3 convolutions (padding 1), theta-minus with average
pooling windows of 2e - 1 positions centred every e positions (padding e - 1, the padding
ignored in the mean), so both forms see the same grid (14x14 at e = 4: 4x4; at e = 8: 2x2).

Options: `extent` (2, 4, 8 or 0 = global, the paper's extent ablation), `definition`,
`reduction` of theta-plus's MLP, and `gate_init`, the initial scale of the gate (theta: the
gather batch norm's gamma; theta-plus: the MLP's last layer).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lightning_modules.models.recalibration.base import (
    RecalibrationModule,
    check_choice,
    check_gate_init,
    scale_initial_weights,
)
from lightning_modules.models.recalibration.squeeze_excite import ExcitationMLP

GLOBAL_EXTENT = 0
LIMITED_EXTENTS = (2, 4, 8)
#: The gather convolutions' definitions: the GE authors' and the SRM authors' re-implementation.
DEFINITIONS = ("ge", "srm")


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
        definition: str = "ge",
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
            definition: The gather convolutions as the GE authors define them (`ge`: no bias,
                MSRA fan-in initialisation) or as the SRM authors re-implemented them (`srm`:
                a bias, initialisation scaled down by the channel count).
        """
        super().__init__(channels)
        check_gate_init(type(self).__name__, gate_init)
        check_choice(type(self).__name__, "definition", definition, DEFINITIONS)
        self.definition = definition
        bias = definition == "srm"
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
            self.gather.conv = nn.Conv2d(
                channels, channels, self.fixed_feature_size, groups=channels, bias=bias
            )
            self.gather.bn = nn.BatchNorm2d(channels)
        elif self.learned_gather:
            # Each stride-2 depthwise 3x3 convolution halves the map: log2(extent) of them
            # gather over `extent` positions per side (ceil(H / extent) of them). Same
            # convolution form as the global gather (the definition's bias, then batch norm).
            self.gather = nn.Sequential()
            num_convs = int(math.log2(extent))
            for index in range(1, num_convs + 1):
                self.gather.add_module(
                    f"conv{index}",
                    nn.Conv2d(
                        channels, channels, 3, stride=2, padding=1, groups=channels, bias=bias
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
        # normal(0, sqrt(2 / n)): the GE prototxts' MSRA filler uses the fan-in, n = k_h * k_w
        # for a depthwise kernel; the official SRM code's generic convolution init uses
        # n = k_h * k_w * out_channels. (PyTorch's default, uniform with bound 1/sqrt(k_h k_w),
        # would be neither.) Biases (`srm` only) keep PyTorch's default: the batch norm that
        # follows removes them in training.
        batch_norms = []
        for layer in self.gather:
            if isinstance(layer, nn.Conv2d):
                fan = math.prod(layer.kernel_size)
                if self.definition == "srm":
                    fan *= layer.out_channels
                nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / fan))
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
        gathered = self.gathered(x)
        if self.excite_mlp:
            # GE-theta-plus: ReLU after the gather's batch norm, then the MLP (as the authors'
            # model definition has it).
            gathered = self.mlp(F.relu(gathered))
        # A global gather is (B, C, 1, 1) and broadcasts; a limited one is resized back.
        if gathered.shape[-2:] != (1, 1):
            gathered = F.interpolate(gathered, size=size, mode="nearest")
        # The gate in the map's dtype: under autocast a global gather's float32 bias makes it
        # float32, and a float32 output would turn the rest of the network to float32.
        return x * torch.sigmoid(gathered).to(x.dtype)

    def gathered(self, x: Tensor) -> Tensor:
        """The gather operator's output: (B, C, 1, 1) for the global extent, else the
        (B, C, ceil(H / e), ceil(W / e)) grid (before theta-plus's MLP and the resize)."""
        if self.fixed_feature_size is not None:
            return self.global_gather(x)
        if self.gather is not None:
            return self.gather(x)
        if self.extent == GLOBAL_EXTENT:
            return x.mean(dim=(2, 3), keepdim=True)
        # Windows of 2e - 1 positions centred at 0, e, 2e, ...: with padding e - 1 there are
        # floor((H - 1) / e) + 1 = ceil(H / e) of them, the theta form's grid; the padding is
        # left out of each mean.
        extent = self.extent
        return F.avg_pool2d(x, 2 * extent - 1, extent, extent - 1, count_include_pad=False)

    def global_gather(self, x: Tensor) -> Tensor:
        """The global-extent learned gather, `gather.bn(gather.conv(x))`, computed faster.

        A depthwise kernel as large as the map has one output position: a dot product of each
        (sample, channel) map with its channel's kernel, plus the bias. `einsum` computes exactly
        that, with the convolution's own parameters, 3-4x faster on the CPU than the
        convolution (forward + backward at 224 px: 42 vs 158 ms on a 56x56 ResNet-50 stage).
        """
        conv = self.gather.conv
        response = torch.einsum("bchw,chw->bc", x, conv.weight[:, 0])
        if conv.bias is not None:
            response = response + conv.bias
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
    """GE-theta: depthwise convolution -> BN gather, sigmoid excite.

    The form the SRM paper compares against. Extra parameters at global extent:
    `C * H * W` (convolution; `+ C` bias with `definition: srm`) `+ 2C` (batch norm).
    """


class GatherExciteThetaPlus(GatherExcite):
    """GE-theta-plus: GE-theta's gather, a ReLU, an SE-style MLP (C -> C/16 -> C), sigmoid.

    `x * sigmoid(MLP(ReLU(BN(conv(x)))))`, resized back for a limited extent.
    """

    excite_mlp = True
