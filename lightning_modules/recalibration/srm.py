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
from torch.autograd.function import FunctionCtx, once_differentiable

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


def _spatial_mean_and_variance(x: Tensor, correction: int) -> tuple[Tensor, Tensor]:
    """Per-(B, C) mean and variance over H x W, as `torch.var_mean` computes them, only faster.

    On the CPU `var_mean` over the last two dimensions runs a scalar Welford loop, about four
    times slower than batch norm's vectorised two-pass statistics kernel; viewing the map as
    one sample of B * C channels lets `torch.batch_norm_update_stats` compute exactly these
    statistics (mean and biased variance). Other layouts and dtypes fall back to `var_mean`.
    """
    batch, channels, height, width = x.shape
    count = height * width
    if x.is_contiguous() and x.dtype in (torch.float32, torch.float64) and count > 1:
        mean, biased_variance = torch.batch_norm_update_stats(
            x.view(1, batch * channels, count), None, None, 0.0
        )
        variance = biased_variance * (count / (count - correction))
        return mean.view(batch, channels), variance.view(batch, channels)
    variance, mean = torch.var_mean(x, dim=(2, 3), correction=correction)
    return mean, variance


class _FusedStyleRecalibration(torch.autograd.Function):
    """`x * gate(x)` with a hand-written backward for the (B, C, H, W) work.

    Autograd on the reference formula runs several full-size passes in the backward (the
    product's two gradients, `var_mean`'s backward, their sum) and keeps a full-size temporary
    for each. Here the backward reads `x` and the incoming gradient twice in all: once for
    `sum_hw(grad * x)` (the gate's gradient) and once for the input gradient, written as
    `grad * g + a * x + b` with per-(B, C) coefficients `a`, `b` from the style statistics.
    The small (B, C) gate graph (CFC, batch norm, sigmoid) is left to autograd, built inside
    the forward and differentiated in the backward, so the batch norm behaves exactly as
    calling the module does (running statistics, momentum, eval mode).
    Saved: `x` (as the reference saves it) and (B, C) tensors; nothing else full-size.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: Tensor,
        cfc_weight: Tensor,
        bn_weight: Tensor | None,
        bn_bias: Tensor | None,
        batch_norm: nn.BatchNorm1d,
        eps: float,
    ) -> Tensor:
        count = x.shape[-2] * x.shape[-1]
        correction = 1 if count > 1 else 0
        mean, variance = _spatial_mean_and_variance(x, correction)
        std = torch.sqrt(variance + eps)
        with torch.enable_grad():
            # Leaves of the small gate graph; the parameters are used as they are, so autograd
            # reaches them directly when the backward differentiates this graph.
            mean_leaf = mean.detach().requires_grad_()
            std_leaf = std.detach().requires_grad_()
            integrated_style = mean_leaf * cfc_weight[:, 0] + std_leaf * cfc_weight[:, 1]
            gate = torch.sigmoid(batch_norm(integrated_style))
        ctx.gate_graph = (gate, mean_leaf, std_leaf)
        ctx.parameters = (cfc_weight, bn_weight, bn_bias)
        ctx.count_minus_correction = count - correction
        ctx.save_for_backward(x, mean, std)
        return x * gate.detach()[:, :, None, None]

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_output: Tensor):
        x, mean, std = ctx.saved_tensors
        gate, mean_leaf, std_leaf = ctx.gate_graph
        # dL/dg = sum over positions of grad * x, in one pass and without a full-size product.
        grad_gate = torch.einsum("bchw,bchw->bc", grad_output, x)
        inputs = [mean_leaf, std_leaf]
        parameters = [p for p in ctx.parameters if p is not None and p.requires_grad]
        # retain_graph: the (B, C) gate graph is tiny and lives only as long as this node, and
        # keeping it lets the node be differentiated again (retain_graph=True, gradcheck).
        grads = torch.autograd.grad(
            gate, inputs + parameters, grad_gate, retain_graph=True, allow_unused=True
        )
        grad_mean, grad_std = grads[:2]
        parameter_grads = iter(grads[2:])
        grad_parameters = [
            next(parameter_grads) if p is not None and p.requires_grad else None
            for p in ctx.parameters
        ]
        grad_x = None
        if ctx.needs_input_grad[0]:
            # d std / d x = (x - mean) / ((N - correction) * std); d mean / d x = 1 / N.
            count = x.shape[-2] * x.shape[-1]
            slope = grad_std / (ctx.count_minus_correction * std)
            offset = grad_mean / count - slope * mean
            grad_x = torch.addcmul(offset[:, :, None, None], x, slope[:, :, None, None])
            grad_x.addcmul_(grad_output, gate.detach()[:, :, None, None])
        return grad_x, grad_parameters[0], grad_parameters[1], grad_parameters[2], None, None


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

    def __init__(self, channels: int, eps: float = STYLE_POOLING_EPS, fused: bool = True) -> None:
        """Build the module.

        Args:
            channels: Number of channels C of the feature map it recalibrates.
            eps: Added to the spatial variance before the square root (1e-5 in the paper).
            fused: Use the fused forward/backward (same results, faster training step);
                False runs the reference formula through autograd.
        """
        super().__init__()
        self.eps = eps
        self.fused = fused
        self.cfc = ChannelwiseFullyConnected(channels)
        # gamma = 1, beta = 0 at the start (PyTorch's default), as the recipe prescribes.
        self.bn = nn.BatchNorm1d(channels)

    def forward(self, x: Tensor) -> Tensor:
        """Recalibrate a (B, C, H, W) feature map; the output has the same shape."""
        if self.fused:
            return _FusedStyleRecalibration.apply(
                x, self.cfc.weight, self.bn.weight, self.bn.bias, self.bn, self.eps
            )
        return x * srm_gate_reference(x, self.cfc.weight, self.bn, self.eps)

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters the SRM recipe trains without weight decay.

        Returns:
            The CFC weights and the SRM batch norm's gamma and beta, relative to this module.
        """
        return {"cfc.weight", "bn.weight", "bn.bias"}
