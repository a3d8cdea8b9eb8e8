"""SE: the Squeeze-and-Excitation module.

Hu, Shen and Sun, "Squeeze-and-Excitation Networks", CVPR 2018, arXiv:1709.01507.

A global average pool squeezes each channel to one number; a two-layer bottleneck MLP with
reduction r = 16 turns the squeezed vector into a per-channel sigmoid gate.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_modules.models.recalibration.base import RecalibrationModule


class ExcitationMLP(nn.Sequential):
    """SE's excitation: `fc1 (C -> C/r) -> ReLU -> fc2 (C/r -> C)`, both with biases.

    Written with 1x1 convolutions so that it also applies position-wise to a gathered map with
    a spatial extent (Gather-Excite's theta-plus variant reuses it).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        """Build the two layers.

        Args:
            channels: Number of input and output channels C.
            reduction: Bottleneck ratio r; the hidden layer has `max(1, C // r)` channels, so
                that the 16-channel stages of a CIFAR ResNet still get a (1-channel) bottleneck.
        """
        super().__init__()
        hidden_channels = max(1, channels // reduction)
        # The biases are part of the published SE-ResNet-50 count (28,088,024).
        self.fc1 = nn.Conv2d(channels, hidden_channels, kernel_size=1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden_channels, channels, kernel_size=1, bias=True)


class SqueezeExcite(RecalibrationModule):
    """SE: `x * sigmoid(MLP(global average pool(x)))`.

    Extra parameters: `2 * C * (C // r) + C // r + C`. All of them are weight-decayed (the
    default `no_weight_decay`): the SE paper decays every parameter, and only SRM's recipe
    exempts its module, so the published configurations are compared as published.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        """Build the module.

        Args:
            channels: Number of channels C of the feature map it recalibrates.
            reduction: Bottleneck ratio r of the excitation MLP (16 in the paper).
        """
        super().__init__(channels)
        self.mlp = ExcitationMLP(channels, reduction)

    def forward(self, x: Tensor) -> Tensor:
        """Recalibrate a (B, C, H, W) feature map; the output has the same shape."""
        squeezed = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.mlp(squeezed))
