"""SRM's fused kernels: hand-written autograd Functions for `StyleRecalibration`'s fast path.

They compute exactly what the reference formula in srm.py (`srm_gate_reference`) computes, with
fewer full-size passes and saved tensors: `FusedStyleRecalibration` is `x * gate(x)`, and
`FusedBatchNormStyleRecalibration` is SRM applied to a training-mode BatchNorm2d's output in one
go. srm.py imports them; nothing here imports srm.py.

Mixed precision (autocast to bfloat16 or float16): a feature map in reduced precision is read as
it is, but every per-(sample, channel) quantity (style statistics, gate, gradient sums) is
computed and accumulated in float32, and each full-size result (output, input gradient) is
rounded once to the map's dtype. On the CPU batch norm's mixed-precision kernels (a bfloat16
input with float32 statistics) do this in the same passes as in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

# Autocast's dtypes: maps in these are reduced with float32 accumulators and statistics.
REDUCED_PRECISION = (torch.bfloat16, torch.float16)


def statistics_dtype(x: Tensor) -> torch.dtype:
    """The dtype of `x`'s per-map statistics: float32 for a reduced-precision map, else its own."""
    return torch.float32 if x.dtype in REDUCED_PRECISION else x.dtype


def _spatial_mean_and_variance(x: Tensor, correction: int) -> tuple[Tensor, Tensor]:
    """Per-(B, C) mean and variance over H x W, as `torch.var_mean` computes them, only faster.

    On the CPU `var_mean` over the last two dimensions runs a scalar Welford loop, about four
    times slower than batch norm's vectorised two-pass statistics kernel; viewing the map as
    one sample of B * C channels lets `torch.batch_norm_update_stats` compute exactly these
    statistics (mean and biased variance). A bfloat16/float16 map on the CPU goes through the
    kernel's mixed-precision variant, which float32 running buffers select (momentum 0 leaves
    them as they are): it accumulates in float32 and returns float32 statistics, in one pass
    over the map as read (a float32 copy first would cost 5x as much). Other layouts and
    devices fall back to `var_mean`, in float32 for a reduced-precision map.
    """
    batch, channels, height, width = x.shape
    count = height * width
    full_precision = x.dtype in (torch.float32, torch.float64)
    if x.is_contiguous() and count > 1 and (full_precision or _uses_batch_norm_kernels(x)):
        maps = batch * channels
        buffers = (None, None)
        if x.dtype in REDUCED_PRECISION:
            buffers = (
                x.new_zeros(maps, dtype=torch.float32),
                x.new_ones(maps, dtype=torch.float32),
            )
        mean, biased_variance = torch.batch_norm_update_stats(x.view(1, maps, count), *buffers, 0.0)
        variance = biased_variance * (count / (count - correction))
        return mean.view(batch, channels), variance.view(batch, channels)
    variance, mean = torch.var_mean(x.to(statistics_dtype(x)), dim=(2, 3), correction=correction)
    return mean, variance


def _uses_batch_norm_kernels(x: Tensor) -> bool:
    """Whether per-map work on `x` goes through batch norm's per-channel CPU kernels.

    Viewed as one sample of B * C channels, a contiguous (B, C, H, W) map lets batch norm's
    kernels apply a per-(sample, channel) affine map and sum per (sample, channel) far faster
    on the CPU than broadcasting tensor operations (measured at 224 px: 22 vs 39 ms for the
    affine map, 8 vs 37 ms for the two sums). A bfloat16/float16 map with float32 coefficients
    takes their mixed-precision variant (float32 arithmetic, output in the map's dtype).
    """
    return (
        x.device.type == "cpu"
        and x.is_contiguous()
        and x.dtype in (torch.float32, torch.float64, *REDUCED_PRECISION)
    )


def _per_map_affine(x: Tensor, scale: Tensor, shift: Tensor | None = None) -> Tensor:
    """`scale * x + shift` with (B, C) coefficients, as a new (B, C, H, W) tensor in x's dtype.

    The arithmetic is in the coefficients' dtype (float32 for a reduced-precision map), the
    result rounded once to x's dtype. `shift=None` is no shift.
    """
    out = torch.empty_like(x)
    if _uses_batch_norm_kernels(x):
        batch, channels, height, width = x.shape
        maps = batch * channels
        if shift is None:
            shift = scale.new_zeros(maps)
        # Eval-mode batch norm with mean 0, variance 1 and eps 0 is exactly scale * x + shift.
        # Written through a view into `out`, so what is returned is no view (a custom autograd
        # function's output must not be one: the block adds its shortcut in place).
        torch.ops.aten.native_batch_norm.out(
            x.view(1, maps, height * width),
            scale.reshape(-1),
            shift.reshape(-1),
            scale.new_zeros(maps),
            scale.new_ones(maps),
            False,
            0.0,
            0.0,
            out=out.view(1, maps, height * width),
            save_mean=scale.new_empty(0),
            save_invstd=scale.new_empty(0),
        )
        return out
    # `out=` in x's dtype: computed in the promoted (coefficient) dtype, rounded once on write.
    if shift is None:
        return torch.mul(x, scale[:, :, None, None], out=out)
    return torch.addcmul(shift[:, :, None, None], x, scale[:, :, None, None], out=out)


def _per_map_gradient_sums(grad: Tensor, x: Tensor, mean: Tensor) -> tuple[Tensor, Tensor]:
    """Per-(B, C) `sum(grad)` and `sum(grad * (x - mean))` over H x W; `mean` is (B, C).

    In `mean`'s dtype (float32 for a reduced-precision map), accumulated in float32 or better.
    """
    if _uses_batch_norm_kernels(x) and grad.is_contiguous():
        batch, channels, height, width = x.shape
        # Batch norm's backward reduction computes exactly these two sums per channel (with a
        # float32 `mean`, in float32 for a bfloat16/float16 map: the mixed-precision kernel).
        _, sum_grad_centred, sum_grad = torch.ops.aten.native_batch_norm_backward(
            grad.view(1, batch * channels, height * width),
            x.view(1, batch * channels, height * width),
            None,
            None,
            None,
            mean.reshape(-1),
            mean.new_ones(batch * channels),
            True,
            0.0,
            [False, True, True],
        )
        return sum_grad.view(batch, channels), sum_grad_centred.view(batch, channels)
    if x.dtype in REDUCED_PRECISION:
        # Float32 copies of this one map (freed on return): einsum in bfloat16 would round the
        # sums, and products rounded to bfloat16 would put every term off by up to 2^-8.
        grad, x = grad.to(mean.dtype), x.to(mean.dtype)
    sum_grad = grad.sum(dim=(2, 3))
    return sum_grad, torch.einsum("bchw,bchw->bc", grad, x) - mean * sum_grad


def _full_size_coefficient(coefficient: Tensor, grad: Tensor) -> Tensor:
    """A (B, C) coefficient as (B, C, 1, 1) in `grad`'s dtype, for an in-place product with it.

    In a reduced-precision map's dtype: a float32 operand would send the in-place update of a
    bfloat16 tensor through the CPU's unvectorised mixed-dtype loop (6x slower); the update is
    still computed in float32 and rounded once, the coefficient itself rounded first.
    """
    return coefficient.to(grad.dtype)[:, :, None, None]


def _style_statistics(x: Tensor, eps: float) -> tuple[Tensor, Tensor, int]:
    """SRM's style pooling for a fused forward: (B, C) mean and std, and `N - correction`."""
    count = x.shape[-2] * x.shape[-1]
    correction = 1 if count > 1 else 0
    mean, variance = _spatial_mean_and_variance(x, correction)
    return mean, torch.sqrt(variance + eps), count - correction


def _gate_forward(
    ctx: FunctionCtx,
    mean: Tensor,
    std: Tensor,
    cfc_weight: Tensor,
    bn_weight: Tensor | None,
    bn_bias: Tensor | None,
    batch_norm: nn.BatchNorm1d,
) -> Tensor:
    """The gate built on the style statistics, for a fused forward.

    The small (B, C) gate graph (CFC, batch norm, sigmoid) is left to autograd, built here on
    detached statistics and differentiated by `_gate_backward`, so the batch norm behaves exactly
    as calling the module does (running statistics, momentum, eval mode). What the backward
    needs of it is recorded in `ctx`.

    Returns:
        The detached (B, C) gate.
    """
    with torch.enable_grad():
        # The parameters are used as they are, so autograd reaches them directly.
        mean_leaf = mean.detach().requires_grad_()
        std_leaf = std.detach().requires_grad_()
        integrated_style = mean_leaf * cfc_weight[:, 0] + std_leaf * cfc_weight[:, 1]
        gate = torch.sigmoid(batch_norm(integrated_style))
    ctx.gate_graph = (gate, mean_leaf, std_leaf)
    ctx.gate_parameters = (cfc_weight, bn_weight, bn_bias)
    return gate.detach()


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


class FusedStyleRecalibration(torch.autograd.Function):
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
        mean, std, ctx.count_minus_correction = _style_statistics(x, eps)
        gate = _gate_forward(ctx, mean, std, cfc_weight, bn_weight, bn_bias, batch_norm)
        ctx.save_for_backward(x, mean, std)
        return _per_map_affine(x, gate)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_output: Tensor):
        x, mean, std = ctx.saved_tensors
        gate = ctx.gate_graph[0].detach()
        # dL/dg = sum over positions of grad * x = sum(grad * (x - mean)) + mean * sum(grad):
        # one pass, no full-size product, accumulated in the statistics' dtype.
        sum_grad, sum_grad_centred = _per_map_gradient_sums(grad_output, x, mean)
        grad_gate = sum_grad_centred + mean * sum_grad
        grad_mean, grad_std, grad_parameters = _gate_backward(ctx, grad_gate)
        grad_x = None
        if ctx.needs_input_grad[0]:
            count = x.shape[-2] * x.shape[-1]
            slope, offset = _style_slope_and_offset(ctx, grad_mean, grad_std, mean, std, count)
            grad_x = _per_map_affine(x, slope, offset)
            grad_x.addcmul_(grad_output, _full_size_coefficient(gate, grad_output))
        return grad_x, *grad_parameters, None, None


class FusedBatchNormStyleRecalibration(torch.autograd.Function):
    """`SRM(BN(x))` for a training-mode BatchNorm2d in one pass forward and about two back.

    In a block the SRM input is the last BN's output `y = alpha * x + beta` (per channel,
    `alpha = gamma * invstd`, `beta = bias - mean * alpha` from the batch statistics). Every
    statistic both modules need follows from per-(sample, channel) sums over H x W:

    - forward: one reduction pass gives each (sample, channel)'s mean and variance of `x`; the
      batch statistics are their combination (law of total variance), `y`'s style statistics
      their affine image, and the output one pass, `out = (alpha g) * x + beta g`;
    - backward: `sum(grad)` and `sum(grad * x)` per (sample, channel) give the gate's gradient
      and, with the forward's sums, the batch norm's reductions; the input gradient is one more
      pass, `grad_x = A * grad + B * x + C` with per-(sample, channel) `A`, `B`, `C`.

    Nothing full-size but `x` is saved, the tensor a plain block's batch norm keeps, so an SRM
    block stores no more activations than a plain one, and it reads a block's output about as
    often as the batch norm alone does. Running statistics are updated as BatchNorm2d does.
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
        count = x.shape[-2] * x.shape[-1]
        correction = 1 if count > 1 else 0
        # The forward's only reduction over x: per-(sample, channel) mean and biased variance.
        sample_mean, sample_variance = _spatial_mean_and_variance(x, 0)
        batch_mean = sample_mean.mean(0)
        batch_variance = sample_variance.mean(0) + (sample_mean - batch_mean).square().mean(0)
        batch_invstd = torch.rsqrt(batch_variance + batch_norm2d.eps)
        total = x.shape[0] * count
        # What nn.BatchNorm2d.forward does to its buffers in training mode (unbiased variance).
        batch_norm2d.num_batches_tracked.add_(1)
        batch_norm2d.running_mean.lerp_(batch_mean, batch_norm2d.momentum)
        batch_norm2d.running_var.lerp_(
            batch_variance * (total / (total - 1)), batch_norm2d.momentum
        )

        alpha = batch_invstd * bn2d_weight
        beta = bn2d_bias - batch_mean * alpha
        # SRM's style pooling of y = alpha * x + beta, from x's statistics.
        mean = alpha * sample_mean + beta
        variance = alpha.square() * sample_variance * (count / (count - correction))
        std = torch.sqrt(variance + eps)
        gate = _gate_forward(ctx, mean, std, cfc_weight, bn_weight, bn_bias, batch_norm)
        ctx.count_minus_correction = count - correction
        ctx.save_for_backward(
            x,
            bn2d_weight,
            bn2d_bias,
            batch_mean,
            batch_invstd,
            sample_mean,
            sample_variance,
            mean,
            std,
        )
        return _per_map_affine(x, alpha * gate, beta * gate)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_output: Tensor):
        (
            x,
            bn2d_weight,
            bn2d_bias,
            batch_mean,
            batch_invstd,
            sample_mean,
            sample_variance,
            mean,
            std,
        ) = ctx.saved_tensors
        gate = ctx.gate_graph[0].detach()
        count = x.shape[-2] * x.shape[-1]
        total = x.shape[0] * count
        alpha = batch_invstd * bn2d_weight
        beta = bn2d_bias - batch_mean * alpha

        # The two reductions over the incoming gradient, per (sample, channel), centred on each
        # map's own mean: sum(grad) and sum(grad * (x - sample_mean)).
        sum_grad, sum_grad_sample_centred = _per_map_gradient_sums(grad_output, x, sample_mean)
        # The gate's gradient, sum(grad * y), with y = alpha * (x - sample_mean) + mean.
        grad_mean, grad_std, grad_parameters = _gate_backward(
            ctx, alpha * sum_grad_sample_centred + mean * sum_grad
        )
        slope, offset = _style_slope_and_offset(ctx, grad_mean, grad_std, mean, std, count)
        # dL/dy = gate * grad + slope * y + offset = gate * grad + p * (x - mu) + q.
        p = slope * alpha
        q = slope * beta + offset + p * batch_mean
        # Per-(sample, channel) sums of the centred input (x - mu) and its square, from the
        # forward's statistics, and of grad * (x - mu).
        centred_mean = sample_mean - batch_mean
        sum_centred = count * centred_mean
        sum_centred_square = count * (sample_variance + centred_mean.square())
        sum_grad_centred = sum_grad_sample_centred + centred_mean * sum_grad
        # The batch norm's reductions over (B, H, W): sum dL/dy and sum dL/dy * (x - mu).
        grad_bn2d_bias = (gate * sum_grad + p * sum_centred + q * count).sum(0)
        sum_dy_centred = (gate * sum_grad_centred + p * sum_centred_square + q * sum_centred).sum(0)
        grad_bn2d_weight = batch_invstd * sum_dy_centred
        # Batch norm's input gradient, alpha * (dL/dy - mean(dL/dy) - xhat * mean(dL/dy xhat)),
        # with dL/dy substituted: grad_x = A * grad + B * x + C.
        k = batch_invstd.square() * sum_dy_centred / total
        coefficient_x = alpha * (p - k)
        constant = alpha * (q - p * batch_mean - grad_bn2d_bias / total + k * batch_mean)
        grad_x = _per_map_affine(x, coefficient_x, constant)
        grad_x.addcmul_(grad_output, _full_size_coefficient(alpha * gate, grad_output))
        return grad_x, grad_bn2d_weight, grad_bn2d_bias, None, *grad_parameters, None, None


def can_fuse_batch_norm(batch_norm2d: nn.Module, x: Tensor) -> bool:
    """Whether `FusedBatchNormStyleRecalibration` computes exactly what calling the BN does.

    Only a plain training-mode BatchNorm2d with affine parameters, running statistics, a fixed
    momentum and no hooks, whose parameters have the input's dtype or, under autocast, are
    float32 for a bfloat16/float16 input (as nn.BatchNorm2d, the fused path then computes in
    float32 and returns the input's dtype); anything else (SyncBatchNorm, eval mode) takes the
    unfused path.
    """
    # Hooks on the batch norm must see its output, which the fused path never materialises.
    # nn.Module has no public "has hooks" query, so the private dicts are read;
    # tests/lightning_modules/models/test_srm_fast.py fails if they disappear.
    return (
        type(batch_norm2d) is nn.BatchNorm2d
        and batch_norm2d.training
        and batch_norm2d.affine
        and batch_norm2d.track_running_stats
        and batch_norm2d.momentum is not None
        and batch_norm2d.weight.dtype in (x.dtype, statistics_dtype(x))
        and x.dim() == 4
        and x.shape[0] * x.shape[-2] * x.shape[-1] > 1
        and not batch_norm2d._forward_hooks
        and not batch_norm2d._forward_pre_hooks
    )
