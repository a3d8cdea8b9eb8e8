"""SRM: the Style-based Recalibration Module, the project's centre.

Lee, Kim and Nam, "SRM: A Style-based Recalibration Module for Convolutional Neural Networks",
ICCV 2019, arXiv:1903.10829.

Each channel is summarised by its style (mean and standard deviation over the spatial positions),
a channel-wise fully connected layer (CFC) mixes the two statistics of that channel only, and a
batch-normalised sigmoid of the result rescales the channel. `srm_gate_reference` writes the gate
out as in the paper; the module runs it through the fused kernels of srm_fused.py by default,
which give the same results faster.

The options reproduce the SRM paper's ablations of its two steps: style pooling (`avg`, `std`,
`avg+std` = the paper's, `max`, `avg+max`) and style integration (`cfc` = the paper's, or an
SE-like channel-mixing `mlp` with reduction r = 16), plus `gate_init`, the initial gamma of the
gate's batch norm (1 in the paper). The fused kernels implement `avg+std` pooling with `cfc`;
every other variant runs its formula through autograd.

Mixed precision: under autocast the feature map arrives in bfloat16 or float16; the style
statistics and the gate are computed in float32 on every path, and the output has the map's
dtype. Under `torch.compile` the formula itself is traced (the fused kernels are hand-written
autograd Functions that the compiler would only run as opaque calls), and the compiler fuses it
into its own kernels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_modules.models.recalibration.base import (
    RecalibrationModule,
    check_choice,
    check_gate_init,
)
from lightning_modules.models.recalibration.squeeze_excite import ExcitationMLP
from lightning_modules.models.recalibration.srm_fused import (
    FusedBatchNormStyleRecalibration,
    FusedStyleRecalibration,
    can_fuse_batch_norm,
    statistics_dtype,
)

STYLE_POOLING_EPS = 1e-5
# Style pooling option -> the per-channel statistics it stacks, in this order.
STYLE_POOLINGS = {
    "avg": ("mean",),
    "std": ("std",),
    "avg+std": ("mean", "std"),
    "max": ("max",),
    "avg+max": ("mean", "max"),
}
STYLE_INTEGRATIONS = ("cfc", "mlp")
# The variant the fused kernels implement (the paper's).
FUSABLE_POOLING, FUSABLE_INTEGRATION = "avg+std", "cfc"


class StyleRecalibration(RecalibrationModule):
    """SRM: `x * sigmoid(BN(CFC(mean, std)))` with per-channel style statistics.

    Extra parameters: 4C by default (2C CFC weights, 2C batch norm affine); with k pooled
    statistics per channel (k = 1 for `avg`, `std`, `max`; 2 for `avg+std`, `avg+max`):
    `kC + 2C` with `cfc`, and `kC * h + h + h * C + C + 2C` with `mlp`, h = max(1, C // r).
    """

    implementation_options = frozenset({"fused"})

    def __init__(
        self,
        channels: int,
        eps: float = STYLE_POOLING_EPS,
        fused: bool = True,
        pooling: str = "avg+std",
        integration: str = "cfc",
        reduction: int = 16,
        gate_init: float = 1.0,
    ) -> None:
        """Build the module.

        Args:
            channels: Number of channels C of the feature map it recalibrates.
            eps: Added to the spatial variance before the square root (1e-5 in the paper).
            fused: Use the fused forward/backward (same results, faster training step);
                False runs the reference formula through autograd. Only the default
                `avg+std` pooling with `cfc` integration has fused kernels; the other variants
                always run their formula through autograd.
            pooling: Style pooling, the per-channel statistics over the positions: `avg+std`
                (mean and standard deviation, the paper's), `avg`, `std`, `max`, `avg+max`.
            integration: Style integration: `cfc` (the paper's channel-wise fully connected
                layer: each channel weighs only its own statistics, zero-initialised) or `mlp`
                (an SE-like channel-mixing MLP, kC -> C/r -> C with biases and a ReLU, followed
                by the same batch norm and sigmoid).
            reduction: Bottleneck ratio r of the `mlp` integration (16, as in SE); unused with
                `cfc`.
            gate_init: Initial gamma of the gate's batch norm (1 in the paper). Every gate
                starts at 0.5 (zero CFC); a smaller gamma keeps the gates near 0.5 for longer as
                the CFC weights grow, which can help short schedules and fine-tuning.
        """
        super().__init__(channels)
        name = type(self).__name__
        check_choice(name, "pooling", pooling, STYLE_POOLINGS)
        check_choice(name, "integration", integration, STYLE_INTEGRATIONS)
        check_gate_init(name, gate_init)
        self.eps = eps
        self.fused = fused
        self.pooling = pooling
        self.integration = integration
        self.statistics = STYLE_POOLINGS[pooling]
        # Whether this variant is the one the fused kernels (and srm_gate_reference) compute.
        self.fusable = pooling == FUSABLE_POOLING and integration == FUSABLE_INTEGRATION
        num_statistics = len(self.statistics)
        if integration == "cfc":
            self.cfc = ChannelwiseFullyConnected(channels, num_statistics)
        else:
            self.mlp = ExcitationMLP(channels, reduction, in_channels=num_statistics * channels)
        # gamma = 1, beta = 0 at the start (PyTorch's default), as the recipe prescribes.
        self.bn = nn.BatchNorm1d(channels)
        if gate_init != 1:
            nn.init.constant_(self.bn.weight, gate_init)

    def forward(self, x: Tensor) -> Tensor:
        """Recalibrate a (B, C, H, W) feature map; the output has the same shape and dtype."""
        if self.fused and self.fusable and not torch.compiler.is_compiling():
            return FusedStyleRecalibration.apply(
                x, self.cfc.weight, self.bn.weight, self.bn.bias, self.bn, self.eps
            )
        return x * self.gate(x).to(x.dtype)

    def gate(self, x: Tensor) -> Tensor:
        """The gate by its formula, through autograd: (B, C, 1, 1), in (0, 1).

        In training mode the batch norm uses the batch statistics and updates its running ones.
        The statistics are float32 for a bfloat16/float16 map (autocast).
        """
        if self.fusable:
            return srm_gate_reference(x, self.cfc.weight, self.bn, self.eps)
        style = style_statistics(x, self.statistics, self.eps)
        if self.integration == "cfc":
            integrated_style = (style * self.cfc.weight).sum(dim=-1)
        else:
            integrated_style = self.mlp(style.flatten(1)[:, :, None, None]).flatten(1)
        return torch.sigmoid(self.bn(integrated_style))[:, :, None, None]

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
        if (
            self.fused
            and self.fusable
            and not torch.compiler.is_compiling()
            and not self._forward_hooks
            and can_fuse_batch_norm(batch_norm, x)
        ):
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
            The `mlp` integration's weights are decayed, as SE's are.
        """
        exempt = {"bn.weight", "bn.bias"}
        return exempt | {"cfc.weight"} if self.integration == "cfc" else exempt


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
        `(mean, std)`, each of shape (B, C); `std = sqrt(unbiased variance + eps)`. Float32
        for a bfloat16/float16 map: a variance rounded to bfloat16 (3 significant digits)
        would pass its rounding on to every gate.
    """
    height, width = x.shape[-2:]
    # The reference implementation uses the unbiased (N - 1) variance. A single spatial position
    # has no spread, and the unbiased estimate would be 0/0 = NaN there, so it counts as 0.
    correction = 1 if height * width > 1 else 0
    # One pass over x yields both statistics.
    variance, mean = torch.var_mean(x.to(statistics_dtype(x)), dim=(2, 3), correction=correction)
    return mean, torch.sqrt(variance + eps)


def style_statistics(x: Tensor, statistics: tuple[str, ...], eps: float) -> Tensor:
    """The per-channel statistics a style pooling variant stacks.

    Args:
        x: Feature map of shape (B, C, H, W).
        statistics: Names among `mean`, `std` (as `style_pooling` computes them) and `max`
            (the largest response over the positions).
        eps: Style pooling's variance epsilon.

    Returns:
        Shape (B, C, len(statistics)), in the order given; float32 for a bfloat16/float16 map.
    """
    dtype = statistics_dtype(x)
    if "std" in statistics:
        mean, std = style_pooling(x, eps)
    else:
        mean, std = x.mean(dim=(2, 3), dtype=dtype), None
    by_name = {"mean": mean, "std": std}
    if "max" in statistics:
        by_name["max"] = x.amax(dim=(2, 3)).to(dtype)
    return torch.stack([by_name[name] for name in statistics], dim=-1)


class ChannelwiseFullyConnected(nn.Module):
    """SRM's style integration weights: one (mean, std) weight pair per channel, no bias.

    Equivalent to `Conv1d(C, C, kernel_size=2, groups=C, bias=False)` applied to the stacked
    (B, C, 2) style; stored as a plain (C, 2) matrix so the formula reads directly. A pooling
    variant with one statistic per channel gets a (C, 1) matrix.
    """

    def __init__(self, channels: int, num_statistics: int = 2) -> None:
        """Create the weights, initialised to zero as in the paper.

        Args:
            channels: Number of channels C of the recalibrated feature map.
            num_statistics: Statistics per channel (2: mean and standard deviation).
        """
        super().__init__()
        # Zero weights make every gate exactly sigmoid(0) = 0.5 at the start of training.
        self.weight = nn.Parameter(torch.zeros(channels, num_statistics))
