"""SE: the Squeeze-and-Excitation module.

Hu, Shen and Sun, "Squeeze-and-Excitation Networks", CVPR 2018, arXiv:1709.01507.

A global average pool squeezes each channel to one number; a two-layer bottleneck MLP with
reduction r = 16 turns the squeezed vector into a per-channel sigmoid gate. The options are the
SE paper's ablations: the reduction ratio r, the squeeze operator (average or max pooling) and
the excitation operator (sigmoid, ReLU or tanh).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_modules.models.recalibration.base import (
    RecalibrationModule,
    check_choice,
    check_gate_init,
    scale_initial_weights,
)

SQUEEZES = ("avg", "max")
EXCITATIONS = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh}


class ExcitationMLP(nn.Sequential):
    """SE's excitation: `fc1 (C_in -> C/r) -> ReLU -> fc2 (C/r -> C)`, both with biases.

    Written with 1x1 convolutions so that it also applies position-wise to a gathered map with
    a spatial extent (Gather-Excite's theta-plus variant reuses it, and SRM's `mlp` integration
    with `C_in = 2C`).
    """

    def __init__(self, channels: int, reduction: int = 16, in_channels: int | None = None) -> None:
        """Build the two layers.

        Args:
            channels: Number of output channels C (and of input channels unless `in_channels`).
            reduction: Bottleneck ratio r; the hidden layer has `max(1, C // r)` channels, so
                that the 16-channel stages of a CIFAR ResNet still get a (1-channel) bottleneck.
            in_channels: Number of input channels C_in; None means C.
        """
        super().__init__()
        if not (isinstance(reduction, int) and reduction >= 1):
            raise ValueError(f"reduction={reduction!r} must be a positive integer.")
        hidden_channels = max(1, channels // reduction)
        # The biases are part of the published SE-ResNet-50 count (28,088,024).
        self.fc1 = nn.Conv2d(in_channels or channels, hidden_channels, kernel_size=1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden_channels, channels, kernel_size=1, bias=True)


class SqueezeExcite(RecalibrationModule):
    """SE: `x * sigmoid(MLP(global average pool(x)))`.

    Extra parameters: `2 * C * (C // r) + C // r + C`, whatever the squeeze and excitation. All
    of them are weight-decayed (the default `no_weight_decay`): the SE paper decays every
    parameter, and only SRM's recipe exempts its module, so the published configurations are
    compared as published.

    Gate range: (0, 1) with the default sigmoid excitation. As in the SE paper's excitation
    ablation, `relu` gives a gate in [0, inf) (responses can be amplified, not only damped) and
    `tanh` one in (-1, 1) (responses can change sign).
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        squeeze: str = "avg",
        excitation: str = "sigmoid",
        gate_init: float = 1.0,
    ) -> None:
        """Build the module.

        Args:
            channels: Number of channels C of the feature map it recalibrates.
            reduction: Bottleneck ratio r of the excitation MLP (16 in the paper; its ablation
                tries 2, 4, 8, 16, 32).
            squeeze: `avg` (global average pooling, the paper's) or `max` (global max pooling).
            excitation: The gate's nonlinearity: `sigmoid` (the paper's, gate in (0, 1)),
                `relu` (gate in [0, inf)) or `tanh` (gate in (-1, 1)).
            gate_init: Initial scale of the gate's input: the MLP's last layer starts at
                PyTorch's default initialisation times this (1: the default, unchanged).
        """
        super().__init__(channels)
        check_choice(type(self).__name__, "squeeze", squeeze, SQUEEZES)
        check_choice(type(self).__name__, "excitation", excitation, EXCITATIONS)
        check_gate_init(type(self).__name__, gate_init)
        self.squeeze = squeeze
        self.excitation = excitation
        self.mlp = ExcitationMLP(channels, reduction)
        scale_initial_weights(self.mlp.fc2, gate_init)

    def forward(self, x: Tensor) -> Tensor:
        """Recalibrate a (B, C, H, W) feature map; the output has the same shape."""
        if self.squeeze == "avg":
            squeezed = x.mean(dim=(2, 3), keepdim=True)
        else:
            squeezed = x.amax(dim=(2, 3), keepdim=True)
        return x * EXCITATIONS[self.excitation](self.mlp(squeezed))
