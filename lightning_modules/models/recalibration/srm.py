"""SRM: the Style-based Recalibration Module, the project's centre.

Lee, Kim and Nam, "SRM: A Style-based Recalibration Module for Convolutional Neural Networks",
ICCV 2019, arXiv:1903.10829.

Each channel is summarised by its style (mean and standard deviation over the spatial positions),
a channel-wise fully connected layer (CFC) mixes the two statistics of that channel only, and a
batch-normalised sigmoid of the result rescales the channel. `srm_gate_reference` writes the gate
out as in the paper; the module runs it through the fused kernels of srm_fused.py by default,
which give the same results faster.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_modules.models.recalibration.base import RecalibrationModule
from lightning_modules.models.recalibration.srm_fused import (
    FusedBatchNormStyleRecalibration,
    FusedStyleRecalibration,
    can_fuse_batch_norm,
)

STYLE_POOLING_EPS = 1e-5


class StyleRecalibration(RecalibrationModule):
    """SRM: `x * sigmoid(BN(CFC(mean, std)))` with per-channel style statistics.

    Extra parameters: 4C (2C CFC weights, 2C batch norm affine).
    """

    def __init__(self, channels: int, eps: float = STYLE_POOLING_EPS, fused: bool = True) -> None:
        """Build the module.

        Args:
            channels: Number of channels C of the feature map it recalibrates.
            eps: Added to the spatial variance before the square root (1e-5 in the paper).
            fused: Use the fused forward/backward (same results, faster training step);
                False runs the reference formula through autograd.
        """
        super().__init__(channels)
        self.eps = eps
        self.fused = fused
        self.cfc = ChannelwiseFullyConnected(channels)
        # gamma = 1, beta = 0 at the start (PyTorch's default), as the recipe prescribes.
        self.bn = nn.BatchNorm1d(channels)

    def forward(self, x: Tensor) -> Tensor:
        """Recalibrate a (B, C, H, W) feature map; the output has the same shape."""
        if self.fused:
            return FusedStyleRecalibration.apply(
                x, self.cfc.weight, self.bn.weight, self.bn.bias, self.bn, self.eps
            )
        return x * srm_gate_reference(x, self.cfc.weight, self.bn, self.eps)

    def forward_after_batch_norm(self, x: Tensor, batch_norm: nn.Module) -> Tensor:
        """`self(batch_norm(x))`, fused where possible so the BN output is not kept.

        The residual blocks call this hook (see `RecalibrationModule`). The fused path saves only
        `x` for the backward, the tensor the batch norm saves anyway, so SRM adds no full-size
        activation to the block; it gives the same outputs, gradients and running statistics as
        the two calls.

        Args:
            x: The last convolution's output, (B, C, H, W).
            batch_norm: The block's last batch norm.

        Returns:
            The recalibrated, normalised map, (B, C, H, W).
        """
        # A forward hook on this module must see its input and output, which the fused path
        # never materialises. nn.Module has no public "has hooks" query, so the private dict is
        # read; tests/lightning_modules/models/test_srm_fast.py fails if it disappears.
        if self.fused and not self._forward_hooks and can_fuse_batch_norm(batch_norm, x):
            return FusedBatchNormStyleRecalibration.apply(
                x,
                batch_norm.weight,
                batch_norm.bias,
                batch_norm,
                self.cfc.weight,
                self.bn.weight,
                self.bn.bias,
                self.bn,
                self.eps,
            )
        return self(batch_norm(x))

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters the SRM recipe trains without weight decay.

        Returns:
            The CFC weights and the SRM batch norm's gamma and beta, relative to this module.
        """
        return {"cfc.weight", "bn.weight", "bn.bias"}


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
