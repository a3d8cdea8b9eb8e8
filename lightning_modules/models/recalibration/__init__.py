"""Recalibration modules for residual blocks, built from a name.

Every module subclasses `RecalibrationModule` (base.py: `channels` first, `x -> x * gate`, the
optional hooks a backbone calls). Adding a module is one file here plus one line in
`RECALIBRATION_MODULES`, the only place the names are listed. A module's options are its
constructor's keyword arguments (`recalibration_kwargs` in the configs); `create_recalibration`
checks them against the constructor's signature and names the valid ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
from lightning_modules.options import check_options, constructor_options, format_options

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
    module_class = recalibration_class(name)
    check_module_options(module_class, kwargs, name)
    return module_class(channels, **kwargs)


def module_option_defaults(module_class: type[RecalibrationModule]) -> dict[str, Any]:
    """The constructor's options after `channels`, with their defaults, in signature order.

    Args:
        module_class: A `RecalibrationModule` subclass.

    Returns:
        `{option: default}`; an option without a default maps to `inspect.Parameter.empty`.
    """
    return constructor_options(module_class, positional=1)


def check_module_options(
    module_class: type[RecalibrationModule], options: Mapping[str, Any], name: str | None = None
) -> None:
    """Fail, naming the module and its valid options, on an option its constructor lacks.

    The valid options are read from the constructor's signature, so they cannot drift from the
    code; values are checked by the constructor itself.

    Args:
        module_class: The module's class.
        options: The keyword arguments to be passed (a backbone adds `feature_size`).
        name: The registered name, for the message.

    Raises:
        ValueError: If an option is not a keyword argument of the constructor.
    """
    label = f"{name!r} ({module_class.__name__})" if name else module_class.__name__
    check_options(
        module_class,
        options,
        label=f"Recalibration module {label}",
        setting="model.init_args.recalibration_kwargs (create_backbone's recalibration_kwargs)",
        positional=1,
    )


def format_module_options(name: str | None, options: Mapping[str, Any] | None) -> str:
    """The options that change the module, as a stable `key=value,key=value` string.

    Options equal to their default, and the module's `implementation_options` (which change
    how, not what, it computes: SRM's `fused`), are left out, so a run with the defaults gets
    an empty string and its variants one string each (the MLflow tag `module_options`).

    Args:
        name: The registered module name.
        options: Its `recalibration_kwargs` (None: none).

    Returns:
        The sorted `key=value` pairs joined by commas; values in JSON (`false`, `[1,2]`),
        strings as they are.

    Raises:
        ValueError: If an option is not one of the module's (see `check_module_options`).
    """
    module_class = recalibration_class(name)
    options = dict(options or {})
    check_module_options(module_class, options, name)
    return format_options(
        module_class,
        options,
        positional=1,
        implementation_options=module_class.implementation_options,
    )


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
    "check_module_options",
    "create_recalibration",
    "format_module_options",
    "module_option_defaults",
    "recalibration_class",
    "srm_gate_reference",
]
