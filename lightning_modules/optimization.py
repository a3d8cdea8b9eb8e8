"""Optimisation recipes the configs name: the SRM paper's SGD, a cosine schedule that follows the
training's length, TLlib's per-step inverse decay, and how a scheduler says when it is stepped."""

from __future__ import annotations

from collections.abc import Iterable

import torch


class CosineAnnealingToMaxEpochs(torch.optim.lr_scheduler.CosineAnnealingLR):
    """Cosine annealing whose period is the training's length unless `T_max` is given.

    With torch's `CosineAnnealingLR` the period is a second number to keep equal to
    `trainer.max_epochs`: `--trainer.max_epochs 24` alone leaves `T_max: 8`, and the learning
    rate climbs back up after epoch 8. Left at None, `MultiDomainClassifier.configure_optimizers`
    sets `T_max` to `trainer.max_epochs`, so one setting drives both. Stepped once per epoch.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        T_max: int | None = None,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        # The first (initial) step returns the base learning rates without reading T_max.
        super().__init__(optimizer, T_max=T_max, eta_min=eta_min, last_epoch=last_epoch)

    def set_period(self, max_epochs: int | None) -> None:
        """Anneal over `max_epochs` epochs (the trainer's `max_epochs`)."""
        if max_epochs is None or max_epochs <= 0:
            raise ValueError(
                f"CosineAnnealingToMaxEpochs needs a finite trainer.max_epochs (got {max_epochs}); "
                "set trainer.max_epochs or model.init_args.lr_scheduler.init_args.T_max"
            )
        self.T_max = max_epochs

    def get_lr(self) -> list[float]:
        # The scheduler's construction steps once to epoch 0, where the base rates need no period.
        if self.T_max is None and self.last_epoch > 0:
            raise ValueError(
                "CosineAnnealingToMaxEpochs has no period: give T_max, or let "
                "MultiDomainClassifier.configure_optimizers set it from trainer.max_epochs"
            )
        return super().get_lr()


#: When Lightning steps a scheduler: after every epoch (torch's schedulers, the default) or after
#: every optimizer step. A scheduler class declares the latter with `interval = "step"`.
SCHEDULER_INTERVALS = ("epoch", "step")


class InverseDecayLR(torch.optim.lr_scheduler.LRScheduler):
    """The inverse decay of the Transfer-Learning-Library's (TLlib's) domain adaptation recipes,
    stepped after every optimizer step:

        lr_i = lr_0 * (1 + gamma * i) ** (-power)    after i optimizer steps,

    lr_0 being each parameter group's initial learning rate (its `lr_multiplier` applied). TLlib's
    CDAN, DANN and MCC scripts use gamma 0.001 and power 0.75 (`--lr-gamma`, `--lr-decay`); with
    lr_0 0.01 the rate is 0.01 * 31^(-0.75) ~ 0.0008 after 30 epochs of 1000 iterations.
    `interval = "step"` tells `MultiDomainClassifier.configure_optimizers` to have Lightning step
    it after every optimizer step (under manual optimisation the model steps it itself, once per
    batch); its count of steps is in its state dict, so a resumed fit continues the decay.
    """

    interval = "step"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        gamma: float = 0.001,
        power: float = 0.75,
        last_epoch: int = -1,
    ) -> None:
        """Settings (each one also a command-line option).

        Args:
            optimizer: the optimizer whose groups' learning rates decay.
            gamma: the step scale of the decay (TLlib: 0.001).
            power: its exponent (TLlib: 0.75).
            last_epoch: steps already taken (-1: a new schedule; torch's name).
        """
        if gamma < 0 or power < 0:
            raise ValueError(
                f"InverseDecayLR needs gamma >= 0 and power >= 0 (got gamma={gamma}, "
                f"power={power}); see model.init_args.lr_scheduler.init_args"
            )
        self.gamma = gamma
        self.power = power
        super().__init__(optimizer, last_epoch=last_epoch)

    def get_lr(self) -> list[float]:
        factor = (1.0 + self.gamma * self.last_epoch) ** (-self.power)
        return [base_lr * factor for base_lr in self.base_lrs]


def scheduler_interval(scheduler: object) -> str:
    """`"step"` for a scheduler class that declares `interval = "step"`, else `"epoch"`."""
    interval = getattr(scheduler, "interval", "epoch")
    if interval not in SCHEDULER_INTERVALS:
        raise ValueError(
            f"{type(scheduler).__name__}.interval is {interval!r}; one of {SCHEDULER_INTERVALS} "
            "(model.init_args.lr_scheduler)"
        )
    return interval


def scheduler_config(optimizer: torch.optim.Optimizer, scheduler: object) -> dict:
    """What `configure_optimizers` returns for one optimizer and its scheduler: Lightning's
    default (stepped every epoch), or its `{"interval": "step"}` configuration."""
    interval = scheduler_interval(scheduler)
    if interval == "epoch":
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}


def step_schedulers(schedulers: object, interval: str) -> None:
    """Step those of `schedulers` (one, a list, or None: what `LightningModule.lr_schedulers()`
    returns) that are stepped every `interval`; for manual optimisation, where Lightning steps
    none of them."""
    for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
        if scheduler is not None and scheduler_interval(scheduler) == interval:
            scheduler.step()


def sgd_recipe(params: Iterable) -> torch.optim.Optimizer:
    """The SRM paper's optimizer: SGD, lr 0.1 (batch 256), momentum 0.9, weight decay 1e-4."""
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
