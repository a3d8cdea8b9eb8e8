"""Schedulers stepped after every optimizer step: `InverseDecayLR` (TLlib's lr * (1 + gamma
i)^-power) and the model's support for a scheduler class that declares `interval = "step"`,
under automatic and manual optimisation; epoch schedulers keep being stepped per epoch."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from lightning_modules.methods import ERM, TRAINING_METHODS, MethodOutput
from lightning_modules.optimization import (
    CosineAnnealingToMaxEpochs,
    InverseDecayLR,
    scheduler_config,
    scheduler_interval,
)
from tests.helpers.domainbed_fits import separable_batch, tiny_model
from tests.helpers.trainers import quiet_trainer


def test_inverse_decay_follows_tllibs_formula_for_every_group() -> None:
    weights = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD(
        [{"params": weights[:1], "lr": 0.01}, {"params": weights[1:], "lr": 0.001}], lr=0.01
    )
    scheduler = InverseDecayLR(optimizer)
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, 0.001]
    for step in range(1, 2001):
        optimizer.step()
        scheduler.step()
        if step in (1, 1000, 2000):
            factor = (1 + 0.001 * step) ** -0.75
            assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * factor)
            assert optimizer.param_groups[1]["lr"] == pytest.approx(0.001 * factor)
    # 30 epochs of 1000 iterations in TLlib: 0.01 * 31^-0.75
    for _ in range(28000):
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 31**-0.75)
    with pytest.raises(ValueError, match="gamma >= 0 and power >= 0"):
        InverseDecayLR(optimizer, gamma=-1.0)


def test_a_scheduler_says_its_interval_and_the_configuration_follows() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    inverse, cosine = InverseDecayLR(optimizer), CosineAnnealingToMaxEpochs(optimizer, T_max=3)
    assert (scheduler_interval(inverse), scheduler_interval(cosine)) == ("step", "epoch")
    assert scheduler_config(optimizer, inverse)["lr_scheduler"] == {
        "scheduler": inverse,
        "interval": "step",
    }
    # torch's schedulers keep Lightning's default (per epoch): the scheduler itself
    assert scheduler_config(optimizer, cosine)["lr_scheduler"] is cosine
    cosine.interval = "batch"
    with pytest.raises(ValueError, match=r"interval is 'batch'; one of \('epoch', 'step'\)"):
        scheduler_interval(cosine)


class ManualERM(ERM):
    """ERM written as a manual step."""

    manual_optimization = True

    def manual_training_step(self, model, batch) -> MethodOutput:
        optimizer = model.optimizers()
        optimizer.zero_grad()
        output = self.training_loss(model, batch)
        model.manual_backward(output.loss)
        optimizer.step()
        return output


class RecordRates(pl.Callback):
    """The heads' learning rate at the start of every batch."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        groups = trainer.optimizers[0].param_groups
        self.rates.append(next(g["lr"] for g in groups if g["name"] == "heads"))


def rates_of_a_fit(method: str, scheduler, epochs: int = 2) -> list[float]:
    model = tiny_model(
        method,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        lr_scheduler=scheduler,
        backbone_lr_multiplier=0.5,
    )
    record = RecordRates()
    trainer = quiet_trainer(max_epochs=epochs, callbacks=[record])
    batches = [separable_batch(seed) for seed in range(3)]
    loader = torch.utils.data.DataLoader(
        [(b.images, b.labels, b.domains) for b in batches], batch_size=None
    )
    trainer.fit(model, train_dataloaders=loader)
    backbone = next(g for g in trainer.optimizers[0].param_groups if g["name"] == "backbone")
    heads = next(g for g in trainer.optimizers[0].param_groups if g["name"] == "heads")
    assert backbone["lr"] == pytest.approx(0.5 * heads["lr"])  # the multiplier decays alike
    assert trainer.global_step == 3 * epochs
    return [*record.rates, heads["lr"]]


@pytest.mark.parametrize("method", ["erm", "manual_erm"])
def test_a_step_scheduler_is_stepped_after_every_optimizer_step(monkeypatch, method) -> None:
    monkeypatch.setitem(TRAINING_METHODS, "manual_erm", ManualERM)
    rates = rates_of_a_fit(method, lambda optimizer: InverseDecayLR(optimizer, gamma=0.5))
    # before step i the rate is 0.1 * (1 + 0.5 i)^-0.75, across the epoch boundary too
    assert rates == pytest.approx([0.1 * (1 + 0.5 * i) ** -0.75 for i in range(7)])


@pytest.mark.parametrize("method", ["erm", "manual_erm"])
def test_an_epoch_scheduler_is_still_stepped_once_per_epoch(monkeypatch, method) -> None:
    monkeypatch.setitem(TRAINING_METHODS, "manual_erm", ManualERM)
    decay = lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)  # noqa: E731
    rates = rates_of_a_fit(method, decay)
    assert rates == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025])
