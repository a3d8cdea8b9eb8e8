"""Fish: gradient matching for domain generalisation (Shi, Seely, Torr, Siddharth, Hannun,
Usunier, Synnaeve; ICLR 2022; arXiv:2104.09937), as DomainBed implements it.

Each batch:

    theta_inner <- theta                      the whole network state: weights and BatchNorm
                                              buffers (running statistics, batch counters)
    for each training domain d, in domain order:
        one step of the inner optimizer on CE(x_d) at theta_inner
    theta <- theta + meta_lr * (theta_inner - theta)     over the whole state

The inner optimizer's state (Adam's moments and step counts in DomainBed) persists across
batches: DomainBed rebuilds the inner network each update and reloads the inner optimizer's
saved state. DomainBed's outer optimizer is created but never used.

Here the model's optimizer (`model.init_args.optimizer`, DomainBed: Adam at its `lr` and
`weight_decay`) is that inner optimizer: the model builds it over a copy of the network's
tensors (`configure_optimizers`), with the parameter groups' learning-rate multipliers and the
scheduler, and Lightning saves and restores its state in checkpoints, so a resumed run goes on
with the same moments. There is no outer optimizer. The copy's tensors are refilled from theta
at every batch and run through the model with `torch.func.functional_call`; the model's
`classification_loss` gives each domain's cross-entropy (per-domain heads, the shared head's
term when there is one). The interpolation runs over every state entry like DomainBed's
(integer buffers such as `num_batches_tracked` are truncated back to integers, as its
`load_state_dict` does).

Defaults and random search (DomainBed's): meta_lr 0.5 / choice {0.05, 0.1, 0.5}.

Logged: `train/loss` is the mean of the domains' inner cross-entropies (DomainBed reports the
last domain's). `trainer.max_steps` counts batches: of the D inner steps per batch only the last
is counted (see `manual_steps.py`). One process only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch

from lightning_modules.methods.base import MethodHost, MethodOutput, TrainingBatch, TrainingMethod
from lightning_modules.methods.manual_steps import (
    check_manual_support,
    classification_loss_with,
    clone_network,
    network_tensors,
    optimizer_step,
)


class Fish(TrainingMethod):
    """Fish with a persistent inner optimizer (the model's) and a state-dict interpolation (see
    the module docstring)."""

    manual_optimization = True
    search_space: ClassVar[dict[str, dict[str, list]]] = {
        "meta_lr": {"choice": [0.05, 0.1, 0.5]},
    }

    def __init__(self, meta_lr: float = 0.5) -> None:
        """Settings (each one also a command-line option).

        Args:
            meta_lr: step from the network towards the inner network after the per-domain inner
                steps (DomainBed default 0.5, random search choice {0.05, 0.1, 0.5}).
        """
        super().__init__()
        if not 0 < meta_lr <= 1:
            raise ValueError(f"model.init_args.method_kwargs.meta_lr={meta_lr} must be in (0, 1]")
        self.meta_lr = meta_lr
        # The inner network's tensors (created with the optimizer, on the model's device). Not
        # registered, so not in checkpoints: they are refilled from theta at every batch.
        self.inner: dict[str, torch.Tensor] = {}

    def configure_optimizers(
        self, model: MethodHost, optimizer_factory: Callable, groups: list[dict]
    ) -> list[torch.optim.Optimizer]:
        """The model's optimizer over the inner network's copy of each group's parameters."""
        self.inner = clone_network(model)
        names = {id(tensor): name for name, tensor in network_tensors(model).items()}
        inner_groups = []
        for group in groups:
            outside = [p for p in group["params"] if id(p) not in names]
            if outside:
                raise ValueError(
                    f"method fish steps copies of the backbone and heads only; parameter group "
                    f"{group.get('name')!r} holds {len(outside)} other parameters"
                )
            inner_groups.append(
                {**group, "params": [self.inner[names[id(p)]] for p in group["params"]]}
            )
        return [optimizer_factory(inner_groups)]

    def manual_training_step(self, model: MethodHost, batch: TrainingBatch) -> MethodOutput:
        check_manual_support(model, "fish")
        optimizer = model.optimizers()
        network = network_tensors(model)
        with torch.no_grad():
            for name, tensor in network.items():
                self.inner[name].copy_(tensor)
        losses, logits, labels = [], [], []
        groups = batch.domain_groups()
        for position, (_, rows) in enumerate(groups):
            optimizer.zero_grad()
            loss, domain_logits = classification_loss_with(
                model, self.inner, batch.images[rows], batch.labels[rows], batch.domains[rows]
            )
            model.manual_backward(loss)
            optimizer_step(model, optimizer, counted=position == len(groups) - 1)
            losses.append(loss.detach())
            logits.append(domain_logits.detach())
            labels.append(batch.labels[rows])
        with torch.no_grad():
            for name, tensor in network.items():
                # copy_ truncates integer buffers like DomainBed's load_state_dict.
                tensor.copy_(tensor + self.meta_lr * (self.inner[name] - tensor))
        return MethodOutput(torch.stack(losses).mean(), torch.cat(logits), torch.cat(labels))

    def extra_repr(self) -> str:
        return f"meta_lr={self.meta_lr}"
