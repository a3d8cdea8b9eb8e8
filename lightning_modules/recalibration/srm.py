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


def _style_gate_forward(
    ctx: FunctionCtx,
    x: Tensor,
    cfc_weight: Tensor,
    bn_weight: Tensor | None,
    bn_bias: Tensor | None,
    batch_norm: nn.BatchNorm1d,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Style statistics of `x` and the gate built on them, for a fused forward.

    The small (B, C) gate graph (CFC, batch norm, sigmoid) is left to autograd, built here on
    detached statistics and differentiated by `_gate_backward`, so the batch norm behaves exactly
    as calling the module does (running statistics, momentum, eval mode). What the backward
    needs of it is recorded in `ctx`.

    Returns:
        `(mean, std, gate)`: the (B, C) statistics and the detached gate, shape (B, C, 1, 1).
    """
    count = x.shape[-2] * x.shape[-1]
    correction = 1 if count > 1 else 0
    mean, variance = _spatial_mean_and_variance(x, correction)
    std = torch.sqrt(variance + eps)
    with torch.enable_grad():
        # The parameters are used as they are, so autograd reaches them directly.
        mean_leaf = mean.detach().requires_grad_()
        std_leaf = std.detach().requires_grad_()
        integrated_style = mean_leaf * cfc_weight[:, 0] + std_leaf * cfc_weight[:, 1]
        gate = torch.sigmoid(batch_norm(integrated_style))
    ctx.gate_graph = (gate, mean_leaf, std_leaf)
    ctx.gate_parameters = (cfc_weight, bn_weight, bn_bias)
    ctx.count_minus_correction = count - correction
    return mean, std, gate.detach()[:, :, None, None]


def _gate_backward(ctx: FunctionCtx, grad_gate: Tensor) -> tuple[Tensor, Tensor, list]:
    """Differentiate the gate graph saved in `ctx`: style-statistic and parameter gradients."""
    gate, mean_leaf, std_leaf = ctx.gate_graph
    parameters = [p for p in ctx.gate_parameters if p is not None and p.requires_grad]
    # retain_graph: the (B, C) gate graph is tiny and lives only as long as this node, and
    # keeping it lets the node be differentiated again (retain_graph=True, gradcheck).
    grads = torch.autograd.grad(
        gate, [mean_leaf, std_leaf, *parameters], grad_gate, retain_graph=True, allow_unused=True
    )
    parameter_grads = iter(grads[2:])
    grad_parameters = [
        next(parameter_grads) if p is not None and p.requires_grad else None
        for p in ctx.gate_parameters
    ]
    return grads[0], grads[1], grad_parameters


def _style_slope_and_offset(
    ctx: FunctionCtx, grad_mean: Tensor, grad_std: Tensor, mean: Tensor, std: Tensor, count: int
) -> tuple[Tensor, Tensor]:
    """Per-(B, C) `slope`, `offset` with `dL/dx (through the style) = slope * x + offset`.

    d std / d x = (x - mean) / ((N - correction) * std); d mean / d x = 1 / N.
    """
    slope = grad_std / (ctx.count_minus_correction * std)
    offset = grad_mean / count - slope * mean
    return slope, offset


class _FusedStyleRecalibration(torch.autograd.Function):
    """`x * gate(x)` with a hand-written backward for the (B, C, H, W) work.

    Autograd on the reference formula runs several full-size passes in the backward (the
    product's two gradients, `var_mean`'s backward, their sum) and keeps a full-size temporary
    for each. Here the backward reads `x` and the incoming gradient twice in all: once for
    `sum_hw(grad * x)` (the gate's gradient) and once for the input gradient, written as
    `grad * g + a * x + b` with per-(B, C) coefficients `a`, `b` from the style statistics.
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
        mean, std, gate = _style_gate_forward(
            ctx, x, cfc_weight, bn_weight, bn_bias, batch_norm, eps
        )
        ctx.save_for_backward(x, mean, std)
        return x * gate

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_output: Tensor):
        x, mean, std = ctx.saved_tensors
        gate = ctx.gate_graph[0].detach()
        # dL/dg = sum over positions of grad * x, in one pass and without a full-size product.
        grad_gate = torch.einsum("bchw,bchw->bc", grad_output, x)
        grad_mean, grad_std, grad_parameters = _gate_backward(ctx, grad_gate)
        grad_x = None
        if ctx.needs_input_grad[0]:
            count = x.shape[-2] * x.shape[-1]
            slope, offset = _style_slope_and_offset(ctx, grad_mean, grad_std, mean, std, count)
            grad_x = torch.addcmul(offset[:, :, None, None], x, slope[:, :, None, None])
            grad_x.addcmul_(grad_output, gate[:, :, None, None])
        return grad_x, *grad_parameters, None, None


class _FusedBatchNormStyleRecalibration(torch.autograd.Function):
    """`SRM(BN(x))` for a training-mode BatchNorm2d, saving only BN's input `x`.

    In a block the SRM input is the last BN's output `y`, and `y` is needed to differentiate
    both the gate and the style pooling: an SRM that saves it keeps one extra full-size map per
    block (+27% activation memory in ResNet-50), which a plain block frees. `y` is an affine
    map of `x` per channel, `y = alpha * x + beta` with `alpha = gamma * invstd` and
    `beta = bias - mean * alpha` (the batch statistics), so the backward writes every
    `y` term through `x` instead: `sum(grad * y) = alpha * sum(grad * x) + beta * sum(grad)`
    and `dL/dy = grad * g + (slope * alpha) * x + (slope * beta + offset)`, then runs the batch
    norm's own backward. Saved: `x` (which the batch norm saves anyway) and per-channel tensors.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: Tensor,
        bn2d_weight: Tensor,
        bn2d_bias: Tensor,
        batch_norm2d: nn.BatchNorm2d,
        cfc_weight: Tensor,
        bn_weight: Tensor | None,
        bn_bias: Tensor | None,
        batch_norm: nn.BatchNorm1d,
        eps: float,
    ) -> Tensor:
        # What nn.BatchNorm2d.forward does in training mode with running statistics.
        batch_norm2d.num_batches_tracked.add_(1)
        y, batch_mean, batch_invstd = torch.native_batch_norm(
            x,
            bn2d_weight,
            bn2d_bias,
            batch_norm2d.running_mean,
            batch_norm2d.running_var,
            True,
            batch_norm2d.momentum,
            batch_norm2d.eps,
        )
        mean, std, gate = _style_gate_forward(
            ctx, y, cfc_weight, bn_weight, bn_bias, batch_norm, eps
        )
        ctx.batch_norm2d = batch_norm2d
        ctx.save_for_backward(x, bn2d_weight, bn2d_bias, batch_mean, batch_invstd, mean, std)
        return y.mul_(gate)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_output: Tensor):
        x, bn2d_weight, bn2d_bias, batch_mean, batch_invstd, mean, std = ctx.saved_tensors
        gate = ctx.gate_graph[0].detach()
        alpha = batch_invstd * bn2d_weight
        beta = bn2d_bias - batch_mean * alpha
        grad_gate = alpha * torch.einsum("bchw,bchw->bc", grad_output, x) + beta * grad_output.sum(
            dim=(2, 3)
        )
        grad_mean, grad_std, grad_parameters = _gate_backward(ctx, grad_gate)
        count = x.shape[-2] * x.shape[-1]
        slope, offset = _style_slope_and_offset(ctx, grad_mean, grad_std, mean, std, count)
        grad_y = torch.addcmul(
            (slope * beta + offset)[:, :, None, None], x, (slope * alpha)[:, :, None, None]
        )
        grad_y.addcmul_(grad_output, gate[:, :, None, None])
        batch_norm2d = ctx.batch_norm2d
        grad_x, grad_bn2d_weight, grad_bn2d_bias = torch.ops.aten.native_batch_norm_backward(
            grad_y,
            x,
            bn2d_weight,
            batch_norm2d.running_mean,
            batch_norm2d.running_var,
            batch_mean,
            batch_invstd,
            True,
            batch_norm2d.eps,
            list(ctx.needs_input_grad[:3]),
        )
        return grad_x, grad_bn2d_weight, grad_bn2d_bias, None, *grad_parameters, None, None


def _can_fuse_batch_norm(batch_norm2d: nn.Module, x: Tensor) -> bool:
    """Whether `_FusedBatchNormStyleRecalibration` computes exactly what calling the BN does.

    Only a plain training-mode BatchNorm2d with affine parameters, running statistics, a fixed
    momentum, the input's dtype (not autocast's mixed precision) and no hooks; anything else
    (SyncBatchNorm, eval mode, bf16 autocast) takes the unfused path.
    """
    return (
        type(batch_norm2d) is nn.BatchNorm2d
        and batch_norm2d.training
        and batch_norm2d.affine
        and batch_norm2d.track_running_stats
        and batch_norm2d.momentum is not None
        and batch_norm2d.weight.dtype == x.dtype
        and x.dim() == 4
        and not batch_norm2d._forward_hooks
        and not batch_norm2d._forward_pre_hooks
    )


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

    def forward_after_batch_norm(self, x: Tensor, batch_norm2d: nn.Module) -> Tensor:
        """`self(batch_norm2d(x))`, fused where possible so the BN output is not kept.

        Blocks call this instead of `self(bn(x))` (see `lightning_modules.backbones`). The fused
        path saves only `x` for the backward, the tensor the batch norm saves anyway, so SRM adds
        no full-size activation to the block; it gives the same outputs, gradients and running
        statistics as the two calls.

        Args:
            x: The last convolution's output, (B, C, H, W).
            batch_norm2d: The block's last batch norm.
        """
        if self.fused and not self._forward_hooks and _can_fuse_batch_norm(batch_norm2d, x):
            return _FusedBatchNormStyleRecalibration.apply(
                x,
                batch_norm2d.weight,
                batch_norm2d.bias,
                batch_norm2d,
                self.cfc.weight,
                self.bn.weight,
                self.bn.bias,
                self.bn,
                self.eps,
            )
        return self(batch_norm2d(x))

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters the SRM recipe trains without weight decay.

        Returns:
            The CFC weights and the SRM batch norm's gamma and beta, relative to this module.
        """
        return {"cfc.weight", "bn.weight", "bn.bias"}
