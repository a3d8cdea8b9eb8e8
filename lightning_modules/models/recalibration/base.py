"""The contract every recalibration module follows, and the "none" module that follows it.

A recalibration module sits on a residual branch and maps a (B, C, H, W) feature map `x` to
`x * g`, with a gate `g` in (0, 1) (broadcast over positions or per position) in its default
configuration; an ablation option may widen the range (SE's `relu` and `tanh` excitations, as in
the SE paper's ablation). Backbones build it from a name as `module_class(channels, **kwargs)`
and talk to it only through the hooks declared here, so a new module needs nothing from the
backbone beyond subclassing `RecalibrationModule`. The constructor's keyword arguments after
`channels` are the module's options (`recalibration_kwargs` in a config); the factory rejects
any other key, listing these.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Collection
from typing import Any, ClassVar

import torch
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
        implementation_options: Class-level. Options that change how the module computes,
            not what (SRM's `fused`): runs differing only in them are the same variant.
        channels: Number of channels C of the feature map it recalibrates.
    """

    uses_feature_size: ClassVar[bool] = False
    implementation_options: ClassVar[frozenset[str]] = frozenset()
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


def check_choice(module: str, option: str, value: object, choices: Collection) -> None:
    """Fail, listing the choices, when an option's value is not one of them.

    Args:
        module: The module's class name, for the message.
        option: The option's name.
        value: The value given.
        choices: The valid values.

    Raises:
        ValueError: If `value` is not in `choices`.
    """
    if value not in choices:
        raise ValueError(
            f"{module}: {option}={value!r} is not valid; choices: {', '.join(map(str, choices))}."
        )


def check_gate_init(module: str, gate_init: float) -> None:
    """Fail on a `gate_init` (the initial scale of a module's gate) that is not positive.

    Args:
        module: The module's class name, for the message.
        gate_init: The value given.

    Raises:
        ValueError: If `gate_init` is not a finite number > 0.
    """
    if not (isinstance(gate_init, int | float) and math.isfinite(gate_init) and gate_init > 0):
        raise ValueError(f"{module}: gate_init={gate_init!r} must be a finite number > 0.")


def scale_initial_weights(layer: nn.Module, gate_init: float) -> None:
    """Multiply a freshly initialised layer's weight and bias by `gate_init` (1: unchanged).

    For the modules whose gate has no batch norm in front (SE, GE-theta-plus) this is what the
    gate-BN gamma is for the others: the scale of the sigmoid's input at the start.
    """
    if gate_init == 1:
        return  # bit-for-bit the default initialisation
    with torch.no_grad():
        for parameter in (layer.weight, layer.bias):
            if parameter is not None:
                parameter.mul_(gate_init)
