"""`FreezeBatchNorm`: the backbone's BatchNorm layers normalise with their running statistics in
training and never update them (DomainBed 2020); their affine parameters still train."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lightning_modules.callbacks.frozen_batchnorm import FreezeBatchNorm
from lightning_modules.classifier import MultiDomainClassifier
from tests.helpers.trainers import quiet_trainer

pytestmark = pytest.mark.filterwarnings("ignore:You defined a `validation_step`")


def tiny_model() -> MultiDomainClassifier:
    torch.manual_seed(0)
    model = MultiDomainClassifier(
        backbone="resnet20",
        recalibration="srm",  # SRM's own BatchNorm1d sits inside every block
        num_classes=3,
        domain_names=["A", "B"],
        image_size=16,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
    )
    for module in model.modules():  # statistics as a pretrained network has them
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model


def fit(model: MultiDomainClassifier, callbacks: list) -> None:
    generator = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(8, 3, 16, 16, generator=generator) * 3 + 1,
            torch.randint(0, 3, (8,), generator=generator),
            torch.arange(8) % 2,
        )
        for _ in range(3)
    ]
    trainer = quiet_trainer(max_epochs=2, callbacks=callbacks)
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))


def split_batch_norms(model: MultiDomainClassifier) -> tuple[dict, dict]:
    """(base layers' BatchNorm2d, recalibration modules' BatchNorm) by name."""
    base, recalibration = {}, {}
    for name, module in model.backbone.named_modules():
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            (recalibration if ".recalibration" in name else base)[name] = module
    return base, recalibration


def test_frozen_layers_keep_their_statistics_and_train_their_affine_parameters() -> None:
    model = tiny_model()
    before = copy.deepcopy(model)
    modes: list[bool] = []
    base, recalibration = split_batch_norms(model)
    assert base and recalibration
    base["bn1"].register_forward_pre_hook(lambda module, args: modes.append(module.training))
    fit(model, [FreezeBatchNorm()])
    assert modes and not any(modes)  # every training forward pass in evaluation mode
    old_base, old_recalibration = split_batch_norms(before)
    for name, module in base.items():
        torch.testing.assert_close(module.running_mean, old_base[name].running_mean)
        torch.testing.assert_close(module.running_var, old_base[name].running_var)
        assert module.num_batches_tracked == old_base[name].num_batches_tracked
    assert any(not torch.equal(m.weight, old_base[n].weight) for n, m in base.items())
    # the recalibration modules' BatchNorm layers start from scratch: still in training mode
    assert all(
        not torch.equal(m.running_mean, old_recalibration[n].running_mean)
        for n, m in recalibration.items()
    )


def test_without_the_callback_statistics_move_and_with_recalibration_everything_is_frozen() -> None:
    free = tiny_model()
    fit(free, [])
    assert not torch.equal(free.backbone.bn1.running_mean, tiny_model().backbone.bn1.running_mean)
    frozen = tiny_model()
    fit(frozen, [FreezeBatchNorm(include_recalibration=True)])
    _, recalibration = split_batch_norms(frozen)
    assert all(int(m.num_batches_tracked) == 0 for m in recalibration.values())


def test_a_model_without_a_backbone_is_named() -> None:
    with pytest.raises(TypeError, match="FreezeBatchNorm needs a model with a `backbone`"):
        FreezeBatchNorm().on_train_batch_start(None, nn.Linear(2, 2), None, 0)
