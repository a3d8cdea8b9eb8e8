"""Every registered recalibration module keeps the `RecalibrationModule` contract.

The contract (lightning_modules/models/recalibration/base.py): a subclass of
`RecalibrationModule`, `channels` as the first constructor argument, `forward(x) = x * gate` with
a gate in [0, 1], and hooks that return what the backbones expect. The registry is the only
place the names are listed, so a module registered there works in every backbone and tool.
Deliberately broken dummies check that the contract check can fail.
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from torch import Tensor, nn

from experiments.model_summary import main as model_summary_main
from lightning_modules.models.backbones import create_backbone
from lightning_modules.models.recalibration import (
    RECALIBRATION_MODULES,
    RecalibrationModule,
    create_recalibration,
)

CHANNELS = 8
FEATURE_SIZE = (6, 5)


def build_kwargs(module_class: type) -> dict:
    """The keyword arguments a backbone adds: the feature size, for the modules that use it."""
    return {"feature_size": FEATURE_SIZE} if module_class.uses_feature_size else {}


def contract_violations(module_class: object) -> list[str]:
    """What `module_class` does wrong against the contract; empty if it keeps it."""
    if not (isinstance(module_class, type) and issubclass(module_class, RecalibrationModule)):
        return [f"{module_class!r} does not subclass RecalibrationModule"]
    problems = []
    parameters = list(inspect.signature(module_class.__init__).parameters.values())[1:]
    if not parameters or parameters[0].name != "channels":
        problems.append(f"first constructor argument is not `channels`: {parameters[:1]}")
    if not isinstance(module_class.uses_feature_size, bool):
        problems.append(f"uses_feature_size is not a bool: {module_class.uses_feature_size!r}")
    try:
        module = module_class(CHANNELS, **build_kwargs(module_class)).train()
    except Exception as error:  # any failure to build breaks the contract
        return [*problems, f"cannot be built from channels first: {error!r}"]
    if module.channels != CHANNELS:
        problems.append(f"channels is {module.channels!r}, not {CHANNELS}")
    fixed = module.fixed_feature_size
    if fixed is not None and not (
        isinstance(fixed, tuple) and len(fixed) == 2 and all(isinstance(n, int) for n in fixed)
    ):
        problems.append(f"fixed_feature_size is neither None nor (H, W): {fixed!r}")

    torch.manual_seed(0)
    x = torch.randn(3, CHANNELS, *FEATURE_SIZE) * 2 + 0.5
    out = module(x)
    if not isinstance(out, Tensor) or out.shape != x.shape:
        return [*problems, f"forward does not return a tensor of the input's shape: {out!r}"]
    # x * g with g in [0, 1]: no response grows or flips its sign.
    if not ((out.abs() <= x.abs()).all() and (out * x >= 0).all()):
        problems.append("forward is not x * gate with a gate in [0, 1]")

    exempt = module.no_weight_decay()
    if not (isinstance(exempt, set) and all(isinstance(name, str) for name in exempt)):
        problems.append(f"no_weight_decay does not return a set of names: {exempt!r}")
    elif not exempt <= dict(module.named_parameters()).keys():
        problems.append(f"no_weight_decay names unknown parameters: {exempt!r}")

    # The blocks' hook must equal the two calls it replaces, running statistics included.
    fused, reference = copy.deepcopy(module), copy.deepcopy(module)
    bn_fused, bn_reference = nn.BatchNorm2d(CHANNELS), nn.BatchNorm2d(CHANNELS)
    after = fused.forward_after_batch_norm(x, bn_fused)
    expected = reference(bn_reference(x))
    if not isinstance(after, Tensor) or after.shape != x.shape:
        problems.append(f"forward_after_batch_norm returns {after!r}")
    else:
        try:
            torch.testing.assert_close(after, expected)
            torch.testing.assert_close(fused.state_dict(), reference.state_dict())
            torch.testing.assert_close(bn_fused.state_dict(), bn_reference.state_dict())
        except AssertionError as error:
            problems.append(f"forward_after_batch_norm is not self(batch_norm(x)): {error}")
    return problems


@pytest.mark.parametrize("name", list(RECALIBRATION_MODULES))
def test_every_registered_module_keeps_the_contract(name: str) -> None:
    module_class = RECALIBRATION_MODULES[name]
    assert contract_violations(module_class) == []
    module = create_recalibration(name, CHANNELS, **build_kwargs(module_class))
    assert type(module) is module_class


@pytest.mark.parametrize("name", list(RECALIBRATION_MODULES))
def test_every_registered_name_builds_a_backbone(name: str) -> None:
    backbone = create_backbone("resnet20", recalibration=name, image_size=16)
    modules = backbone.recalibration_modules()
    assert len(modules) == 9
    assert all(type(module) is RECALIBRATION_MODULES[name] for module in modules.values())
    assert backbone(torch.randn(2, 3, 16, 16)).shape == (2, backbone.feature_dim)


class HalfGate(RecalibrationModule):
    """A minimal module that keeps the contract: a constant gate of one half."""

    def forward(self, x: Tensor) -> Tensor:
        return x * 0.5


class NotSubclassed(nn.Module):
    """Gates correctly but does not declare the contract."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        return x * 0.5


class ChannelsNotFirst(HalfGate):
    """Takes another argument before `channels`."""

    def __init__(self, reduction: int = 16, channels: int = 8) -> None:
        super().__init__(channels)


class ListForNoWeightDecay(HalfGate):
    """A hook that returns the wrong type."""

    def no_weight_decay(self) -> list[str]:
        return []


class AmplifyingGate(HalfGate):
    """Not a gate in [0, 1]."""

    def forward(self, x: Tensor) -> Tensor:
        return x * 2


class InconsistentAfterBatchNorm(HalfGate):
    """A fused hook that differs from `self(batch_norm(x))`."""

    def forward_after_batch_norm(self, x: Tensor, batch_norm: nn.Module) -> Tensor:
        return self(x)


def test_a_minimal_module_keeps_the_contract() -> None:
    assert contract_violations(HalfGate) == []


@pytest.mark.parametrize(
    ("module_class", "problem"),
    [
        (NotSubclassed, "does not subclass RecalibrationModule"),
        (ChannelsNotFirst, "first constructor argument is not `channels`"),
        (ListForNoWeightDecay, "no_weight_decay does not return a set"),
        (AmplifyingGate, "not x * gate"),
        (InconsistentAfterBatchNorm, "forward_after_batch_norm is not self(batch_norm(x))"),
    ],
)
def test_the_contract_check_rejects_a_broken_module(module_class: type, problem: str) -> None:
    violations = contract_violations(module_class)
    assert any(problem in violation for violation in violations), violations


def test_the_factory_refuses_a_registered_class_outside_the_contract(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(RECALIBRATION_MODULES, "not_subclassed", NotSubclassed)
    with pytest.raises(TypeError, match=r"'not_subclassed'.*does not subclass RecalibrationModule"):
        create_backbone("resnet20", recalibration="not_subclassed", image_size=16)


def test_one_registry_line_makes_a_module_usable_everywhere(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(RECALIBRATION_MODULES, "half", HalfGate)
    backbone = create_backbone("resnet20", recalibration="half", image_size=16)
    assert all(isinstance(m, HalfGate) for m in backbone.recalibration_modules().values())
    model_summary_main(["--backbone", "resnet20", "--recalibration", "half", "--image-size", "16"])
    assert "resnet20 + half" in capsys.readouterr().out
