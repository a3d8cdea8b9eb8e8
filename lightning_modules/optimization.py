"""Optimisation recipes the configs name: the SRM paper's SGD and a cosine schedule that follows
the training's length."""

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


def sgd_recipe(params: Iterable) -> torch.optim.Optimizer:
    """The SRM paper's optimizer: SGD, lr 0.1 (batch 256), momentum 0.9, weight decay 1e-4."""
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
