"""SRM: the Style-based Recalibration Module, the project's centre.

Lee, Kim and Nam, "SRM: A Style-based Recalibration Module for Convolutional Neural Networks",
ICCV 2019, arXiv:1903.10829.

Each channel is summarised by its style (mean and standard deviation over the spatial positions),
a channel-wise fully connected layer (CFC) mixes the two statistics of that channel only, and a
batch-normalised sigmoid of the result rescales the channel.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

STYLE_POOLING_EPS = 1e-5


def style_pooling(x: Tensor, eps: float = STYLE_POOLING_EPS) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation over the spatial positions.

    Args:
        x: Feature map of shape (B, C, H, W).
        eps: Added to the variance before the square root, keeping its gradient finite.

    Returns:
        `(mean, std)`, each of shape (B, C); `std = sqrt(unbiased variance + eps)`.
    """
    height, width = x.shape[-2:]
    # The reference implementation uses the unbiased (N - 1) variance. A single spatial position
    # has no spread, and the unbiased estimate would be 0/0 = NaN there, so it counts as 0.
    correction = 1 if height * width > 1 else 0
    # One pass over x yields both statistics.
    variance, mean = torch.var_mean(x, dim=(2, 3), correction=correction)
    return mean, torch.sqrt(variance + eps)


def srm_gate_reference(
    x: Tensor, cfc_weight: Tensor, batch_norm: nn.BatchNorm1d, eps: float = STYLE_POOLING_EPS
) -> Tensor:
    """The SRM gate written out as in the paper; the definition a fused fast path must match.

    In training mode `batch_norm` normalises with the batch statistics and updates its running
    statistics, exactly as calling the module would.

    Args:
        x: Feature map of shape (B, C, H, W).
        cfc_weight: Channel-wise fully connected weights of shape (C, 2): column 0 weighs the
            mean, column 1 the standard deviation.
        batch_norm: The BatchNorm1d(C) applied to the integrated style.
        eps: Style pooling's variance epsilon.

    Returns:
        The gate `sigmoid(BN(w_c0 * mean_c + w_c1 * std_c))`, shape (B, C, 1, 1), in (0, 1).
    """
    mean, std = style_pooling(x, eps)
    # Style integration: each channel mixes only its own two statistics (a grouped, not a
    # full, linear map), which is what keeps SRM at 4C parameters per block.
    integrated_style = mean * cfc_weight[:, 0] + std * cfc_weight[:, 1]
    return torch.sigmoid(batch_norm(integrated_style))[:, :, None, None]


class ChannelwiseFullyConnected(nn.Module):
    """SRM's style integration weights: one (mean, std) weight pair per channel, no bias.

    Equivalent to `Conv1d(C, C, kernel_size=2, groups=C, bias=False)` applied to the stacked
    (B, C, 2) style; stored as a plain (C, 2) matrix so the formula reads directly.
    """

    def __init__(self, channels: int) -> None:
        """Create the weights, initialised to zero as in the paper.

        Args:
            channels: Number of channels C of the recalibrated feature map.
        """
        super().__init__()
        # Zero weights make every gate exactly sigmoid(0) = 0.5 at the start of training.
        self.weight = nn.Parameter(torch.zeros(channels, 2))


class StyleRecalibration(nn.Module):
    """SRM: `x * sigmoid(BN(CFC(mean, std)))` with per-channel style statistics.

    Extra parameters: 4C (2C CFC weights, 2C batch norm affine).
    """

    def __init__(self, channels: int, eps: float = STYLE_POOLING_EPS) -> None:
        """Build the module.

        Args:
            channels: Number of channels C of the feature map it recalibrates.
            eps: Added to the spatial variance before the square root (1e-5 in the paper).
        """
        super().__init__()
        self.eps = eps
        self.cfc = ChannelwiseFullyConnected(channels)
        # gamma = 1, beta = 0 at the start (PyTorch's default), as the recipe prescribes.
        self.bn = nn.BatchNorm1d(channels)

    def forward(self, x: Tensor) -> Tensor:
        """Recalibrate a (B, C, H, W) feature map; the output has the same shape."""
        return x * srm_gate_reference(x, self.cfc.weight, self.bn, self.eps)

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters the SRM recipe trains without weight decay.

        Returns:
            The CFC weights and the SRM batch norm's gamma and beta, relative to this module.
        """
        return {"cfc.weight", "bn.weight", "bn.bias"}
