"""The contract every recalibration module follows, and the "none" module that follows it.

A recalibration module sits on a residual branch and maps a (B, C, H, W) feature map `x` to
`x * g`, with a gate `g` in (0, 1) (broadcast over positions or per position). Backbones build
it from a name as `module_class(channels, **kwargs)` and talk to it only through the hooks
declared here, so a new module needs nothing from the backbone beyond subclassing
`RecalibrationModule`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from torch import Tensor, nn


class RecalibrationModule(nn.Module, ABC):
    """Base class of the recalibration modules: `forward(x) -> x * gate(x)` plus optional hooks.

    Subclasses take `channels` as their first constructor argument, implement `forward` and
    override only the hooks they need; each hook's default describes the plain behaviour.

    Attributes:
        uses_feature_size: Class-level. True if the constructor needs the (H, W) of the
            stage it sits in: a backbone then passes `feature_size=(H, W)` (default False).
        fixed_feature_size: The (H, W) this instance only accepts, or None if it accepts any
            size (default). A backbone with any such module is tied to its input resolution
            and says so before the module would fail.
        channels: Number of channels C of the feature map it recalibrates.
    """

    uses_feature_size: ClassVar[bool] = False
    fixed_feature_size: tuple[int, int] | None = None

    def __init__(self, channels: int) -> None:
        """Record the channel count.

        Args:
            channels: Number of channels C of the feature map it recalibrates.
        """
        super().__init__()
        self.channels = channels

    @abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """Recalibrate a (B, C, H, W) feature map: `x * gate`, with the same shape."""

    def forward_after_batch_norm(self, x: Tensor, batch_norm: nn.Module) -> Tensor:
        """`self(batch_norm(x))`: the residual branch's last two steps, called by the blocks.

        Override to compute both at once (SRM does, so that it need not keep the batch norm's
        output for its backward); the result must equal the two calls.

        Args:
            x: The branch's last convolution output, (B, C, H, W).
            batch_norm: The branch's last batch norm.

        Returns:
            The recalibrated, normalised map, (B, C, H, W).
        """
        return self(batch_norm(x))

    def no_weight_decay(self) -> set[str]:
        """Names of this module's parameters (relative to it) trained without weight decay.

        The default, an empty set, is the standard recipe: decay every parameter. The backbone
        collects these names into the optimiser's no-decay group.

        Returns:
            A set of names from `self.named_parameters()`.
        """
        return set()


class NoRecalibration(RecalibrationModule, nn.Identity):
    """The "none" module: the plain ResNet block's branch, `x -> x` (an `nn.Identity`)."""

    def __init__(self, channels: int, **kwargs: Any) -> None:
        """Build the identity.

        Args:
            channels: Number of channels C (recorded only).
            **kwargs: Rejected; accepted here only to name them in the error.
        """
        if kwargs:
            raise ValueError(f"Recalibration 'none' takes no arguments, got {sorted(kwargs)}.")
        super().__init__(channels)

    def forward(self, x: Tensor) -> Tensor:
        """Return `x` unchanged (a gate of 1)."""
        return x
