"""Training methods, built from a name: how a batch becomes a loss and an optimizer step.

Every method subclasses `TrainingMethod` (base.py: its hooks and their ERM defaults). Adding a
method is one file here plus one line in `TRAINING_METHODS`, the only place the names are
listed. A method's options are its constructor's keyword arguments (`method_kwargs` in the
configs); `create_method` checks them against the constructor's signature and names the valid
ones, as `create_recalibration` does for the modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning_modules.methods.arm import ARM
from lightning_modules.methods.base import MethodHost, MethodOutput, TrainingBatch, TrainingMethod
from lightning_modules.methods.cdan import CDAN
from lightning_modules.methods.cdann import CDANN
from lightning_modules.methods.coral import CORAL
from lightning_modules.methods.dann import DANN
from lightning_modules.methods.dann_dg import DANNDG
from lightning_modules.methods.dsu import DSU
from lightning_modules.methods.efdmix import EFDMix
from lightning_modules.methods.erm import ERM
from lightning_modules.methods.fish import Fish
from lightning_modules.methods.groupdro import GroupDRO
from lightning_modules.methods.irm import IRM
from lightning_modules.methods.mcc import MCC
from lightning_modules.methods.mixstyle import MixStyle
from lightning_modules.methods.mixup import Mixup
from lightning_modules.methods.mldg import MLDG
from lightning_modules.methods.mmd import MMD
from lightning_modules.methods.mtl import MTL
from lightning_modules.methods.rsc import RSC
from lightning_modules.methods.sagnet import SagNet
from lightning_modules.methods.sd import SpectralDecoupling
from lightning_modules.methods.vrex import VREx
from lightning_modules.options import check_options, format_options

TRAINING_METHODS: dict[str, type[TrainingMethod]] = {
    "erm": ERM,
    "arm": ARM,
    "cdan": CDAN,
    "cdann": CDANN,
    "coral": CORAL,
    "dann": DANN,
    "dann_dg": DANNDG,
    "dsu": DSU,
    "efdmix": EFDMix,
    "fish": Fish,
    "groupdro": GroupDRO,
    "irm": IRM,
    "mcc": MCC,
    "mixstyle": MixStyle,
    "mixup": Mixup,
    "mldg": MLDG,
    "mmd": MMD,
    "mtl": MTL,
    "rsc": RSC,
    "sagnet": SagNet,
    "sd": SpectralDecoupling,
    "vrex": VREx,
}


def method_class(name: str) -> type[TrainingMethod]:
    """The class registered under `name`.

    Raises:
        ValueError: If `name` is not registered.
        TypeError: If the registered class does not subclass `TrainingMethod`.
    """
    if name not in TRAINING_METHODS:
        raise ValueError(
            f"Unknown training method {name!r} (model.init_args.method); valid choices: "
            f"{', '.join(TRAINING_METHODS)}. New methods are registered in "
            "lightning_modules/methods/__init__.py."
        )
    cls = TRAINING_METHODS[name]
    if not (isinstance(cls, type) and issubclass(cls, TrainingMethod)):
        raise TypeError(
            f"Training method {name!r} is registered as {cls!r}, which does not subclass "
            "TrainingMethod (lightning_modules/methods/base.py)."
        )
    return cls


def check_method_options(name: str, options: Mapping[str, Any]) -> type[TrainingMethod]:
    """The method's class, after failing on an option its constructor lacks (naming the valid
    ones)."""
    cls = method_class(name)
    check_options(
        cls,
        options,
        label=f"Training method {name!r} ({cls.__name__})",
        setting="model.init_args.method_kwargs",
    )
    return cls


def create_method(name: str, options: Mapping[str, Any] | None = None) -> TrainingMethod:
    """Build the method registered under `name` with its options (`method_kwargs`)."""
    options = dict(options or {})
    return check_method_options(name, options)(**options)


def format_method_options(name: str, options: Mapping[str, Any] | None) -> str:
    """The options that change the method, as a stable `key=value,...` string ('' for the
    defaults); see `lightning_modules.options.format_options`."""
    options = dict(options or {})
    cls = check_method_options(name, options)
    return format_options(cls, options, implementation_options=cls.implementation_options)


__all__ = [
    "ARM",
    "CDANN",
    "DANN",
    "DANNDG",
    "DSU",
    "ERM",
    "MLDG",
    "TRAINING_METHODS",
    "EFDMix",
    "Fish",
    "MethodHost",
    "MethodOutput",
    "MixStyle",
    "SagNet",
    "TrainingBatch",
    "TrainingMethod",
    "check_method_options",
    "create_method",
    "format_method_options",
    "method_class",
]
