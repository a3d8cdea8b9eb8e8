"""Recalibration modules for residual blocks, built from a name.

Every module subclasses `RecalibrationModule` (base.py: `channels` first, `x -> x * gate`, the
optional hooks a backbone calls). Adding a module is one file here plus one line in
`RECALIBRATION_MODULES`, the only place the names are listed.
"""

from __future__ import annotations

from lightning_modules.models.recalibration.base import NoRecalibration, RecalibrationModule
from lightning_modules.models.recalibration.gather_excite import (
    GatherExcite,
    GatherExciteTheta,
    GatherExciteThetaMinus,
    GatherExciteThetaPlus,
)
from lightning_modules.models.recalibration.mssar import MultiScaleSpatiallyAsymmetricRecalibration
from lightning_modules.models.recalibration.squeeze_excite import SqueezeExcite
from lightning_modules.models.recalibration.srm import StyleRecalibration, srm_gate_reference

RECALIBRATION_MODULES: dict[str, type[RecalibrationModule]] = {
    "none": NoRecalibration,
    "se": SqueezeExcite,
    "srm": StyleRecalibration,
    "ge_minus": GatherExciteThetaMinus,
    "ge": GatherExciteTheta,
    "ge_plus": GatherExciteThetaPlus,
    "mssar": MultiScaleSpatiallyAsymmetricRecalibration,
}


def recalibration_class(name: str | None) -> type[RecalibrationModule]:
    """The class registered under `name`.

    Args:
        name: A key of `RECALIBRATION_MODULES`; `None` means `"none"`.

    Returns:
        The class.

    Raises:
        ValueError: If `name` is not registered.
        TypeError: If the registered class does not subclass `RecalibrationModule`.
    """
    key = "none" if name is None else name
    if key not in RECALIBRATION_MODULES:
        raise ValueError(
            f"Unknown recalibration module {name!r}; valid choices: "
            f"{', '.join(RECALIBRATION_MODULES)}. New modules are registered in "
            "lightning_modules/models/recalibration/__init__.py."
        )
    module_class = RECALIBRATION_MODULES[key]
    # Checked here so that a module breaking the contract fails when built, by name, rather
    # than deep inside a backbone's forward.
    if not (isinstance(module_class, type) and issubclass(module_class, RecalibrationModule)):
        raise TypeError(
            f"Recalibration module {key!r} is registered as {module_class!r}, which does not "
            "subclass RecalibrationModule (lightning_modules/models/recalibration/base.py)."
        )
    return module_class


def create_recalibration(name: str | None, channels: int, **kwargs) -> RecalibrationModule:
    """Build the recalibration module registered under `name`.

    Args:
        name: A key of `RECALIBRATION_MODULES`; `None` or `"none"` gives `NoRecalibration`, an
            `nn.Identity`.
        channels: Number of channels of the feature map the module recalibrates.
        **kwargs: Passed to the module's constructor (e.g. `reduction=` for SE).

    Returns:
        The module.

    Raises:
        ValueError: If `name` is not registered, or keyword arguments are given for `"none"`.
        TypeError: If the registered class does not subclass `RecalibrationModule`.
    """
    return recalibration_class(name)(channels, **kwargs)


__all__ = [
    "RECALIBRATION_MODULES",
    "GatherExcite",
    "GatherExciteTheta",
    "GatherExciteThetaMinus",
    "GatherExciteThetaPlus",
    "MultiScaleSpatiallyAsymmetricRecalibration",
    "NoRecalibration",
    "RecalibrationModule",
    "SqueezeExcite",
    "StyleRecalibration",
    "create_recalibration",
    "recalibration_class",
    "srm_gate_reference",
]
