"""One setting drives the epochs and the cosine period: `CosineAnnealingToMaxEpochs` takes its
`T_max` from `trainer.max_epochs` unless the config gives one."""

from __future__ import annotations

import functools
import itertools
import math

import pytest
import torch
from pytorch_lightning import Trainer

from lightning_modules.classifier import MultiDomainClassifier
from lightning_modules.optimization import CosineAnnealingToMaxEpochs


def build_model(scheduler) -> MultiDomainClassifier:
    return MultiDomainClassifier(
        backbone="resnet20",
        recalibration="none",
        num_classes=3,
        domain_names=["A", "B"],
        image_size=32,
        optimizer=lambda params: torch.optim.SGD(params, lr=1.0),
        lr_scheduler=scheduler,
    )


def learning_rates(model: MultiDomainClassifier, max_epochs: int) -> list[float]:
    model.trainer = Trainer(max_epochs=max_epochs, logger=False, enable_checkpointing=False)
    configured = model.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]
    rates = []
    for _ in range(max_epochs):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def test_period_follows_max_epochs_and_reaches_zero_at_the_end():
    rates = learning_rates(build_model(CosineAnnealingToMaxEpochs), max_epochs=24)
    assert rates[-1] == pytest.approx(0.0, abs=1e-9)
    assert all(a >= b for a, b in itertools.pairwise(rates))  # never climbs back
    assert rates[11] == pytest.approx(0.5 * (1 + math.cos(math.pi * 12 / 24)))


def test_an_explicit_period_is_kept():
    scheduler = functools.partial(CosineAnnealingToMaxEpochs, T_max=4)
    rates = learning_rates(build_model(scheduler), max_epochs=6)
    assert rates[3] == pytest.approx(0.0, abs=1e-9) and rates[5] > 0  # torch's cosine cycles


def test_no_period_outside_the_classifier_is_a_clear_error():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = CosineAnnealingToMaxEpochs(optimizer)
    optimizer.step()
    with pytest.raises(ValueError, match="no period"):
        scheduler.step()
    with pytest.raises(ValueError, match=r"finite trainer\.max_epochs"):
        scheduler.set_period(-1)
