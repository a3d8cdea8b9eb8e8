"""Recalibration modules for residual blocks, built from a name.

Every module maps a (B, C, H, W) feature map `x` to `x * g` with a gate `g` in (0, 1) and takes
`channels` as its first argument. Adding a module is one file here plus one line in
`RECALIBRATION_MODULES`.
"""

from __future__ import annotations

from torch import nn

from lightning_modules.recalibration.gather_excite import (
    GatherExcite,
    GatherExciteTheta,
    GatherExciteThetaMinus,
    GatherExciteThetaPlus,
)
from lightning_modules.recalibration.mssar import MultiScaleSpatiallyAsymmetricRecalibration
from lightning_modules.recalibration.squeeze_excite import SqueezeExcite
from lightning_modules.recalibration.srm import StyleRecalibration, srm_gate_reference

# `None` stands for no module (the plain ResNet block).
RECALIBRATION_MODULES: dict[str, type[nn.Module] | None] = {
    "none": None,
    "se": SqueezeExcite,
    "srm": StyleRecalibration,
    "ge_minus": GatherExciteThetaMinus,
    "ge": GatherExciteTheta,
    "ge_plus": GatherExciteThetaPlus,
    "mssar": MultiScaleSpatiallyAsymmetricRecalibration,
}


def create_recalibration(name: str | None, channels: int, **kwargs) -> nn.Module:
    """Build the recalibration module registered under `name`.

    Args:
        name: A key of `RECALIBRATION_MODULES`; `None` or `"none"` gives `nn.Identity()`.
        channels: Number of channels of the feature map the module recalibrates.
        **kwargs: Passed to the module's constructor (e.g. `reduction=` for SE).

    Returns:
        The module.

    Raises:
        ValueError: If `name` is not registered, or keyword arguments are given for `"none"`.
    """
    key = "none" if name is None else name
    if key not in RECALIBRATION_MODULES:
        raise ValueError(
            f"Unknown recalibration module {name!r}; valid choices: "
            f"{', '.join(RECALIBRATION_MODULES)}. New modules are registered in "
            "lightning_modules/recalibration/__init__.py."
        )
    module_class = RECALIBRATION_MODULES[key]
    if module_class is None:
        if kwargs:
            raise ValueError(f"Recalibration 'none' takes no arguments, got {sorted(kwargs)}.")
        return nn.Identity()
    return module_class(channels, **kwargs)


__all__ = [
    "RECALIBRATION_MODULES",
    "GatherExcite",
    "GatherExciteTheta",
    "GatherExciteThetaMinus",
    "GatherExciteThetaPlus",
    "MultiScaleSpatiallyAsymmetricRecalibration",
    "SqueezeExcite",
    "StyleRecalibration",
    "create_recalibration",
    "srm_gate_reference",
]
