"""MLDG: meta-learning for domain generalisation (Li, Yang, Song, Hospedales; AAAI 2018;
arXiv:1710.03463), first-order, as DomainBed implements it.

Each batch, the training domains present (D of them) are shuffled; the last `n_meta_test` are
meta-test, the others meta-train, each meta-train domain i paired with a meta-test domain j
cyclically (`zip(meta_train, cycle(meta_test))`, so there are D - n_meta_test pairs), both
minibatches cut to the shorter one. Per pair:

    G_i      = grad CE(x_i) at theta
    theta'_i = one step of a fresh optimizer from theta on G_i           (a copy of the network)
    G_j      = grad CE(x_j) at theta'_i                                   (no second order)
    grad    += (G_i + mldg_beta * G_j) / D

then one step of the model's optimizer on `grad`. The divisor is D, the number of domains,
even with fewer pairs (3 domains and n_meta_test=2 give one pair, divided by 3). Every network
parameter gets a gradient, zero where no pair reached it (DomainBed fills missing gradients
with zeros, so Adam's moments and weight decay act on them too). The logged loss is
sum_pairs (CE_i + mldg_beta CE_j) / D.

Defaults and random search (DomainBed's): mldg_beta 1 / 10^U(-1, 1); n_meta_test 2 /
choice {1, 2}. With n_meta_test >= D there is no pair, so it is refused (two training domains
need n_meta_test: 1).

Details:
- The inner step is a fresh instance of the model's optimizer (`model.init_args.optimizer`) at
  the outer optimizer's current learning rates and settings, over a copy of the network's
  tensors. DomainBed's model optimizer is Adam, so its inner step is a fresh Adam's first step,
  about lr * sign(G_i); with SGD it is the paper's plain step theta - lr G_i.
- The copy is a set of tensors run through the model with `torch.func.functional_call`; the
  model's `classification_loss` gives the cross-entropies (per-domain heads route each sample
  to its head; the shared head's term is added when the model has one).
- `trainer.max_steps` counts batches: one counted optimizer step per batch.

Deviations from DomainBed:
- BatchNorm running statistics. DomainBed runs every forward pass on copies, so the network's
  own running statistics never change and evaluation uses the initial (pretrained) ones. Here
  CE(x_i) at theta is computed by the network itself (the same gradient: in training BatchNorm
  normalises with the batch's statistics), so its running statistics follow the meta-train
  batches as in ERM; the copy, taken after that pass, sees x_j. The weights are DomainBed's.
- [DB-2020] paired the domains like its Mixup (cyclic over all domains); this is HEAD's split.
- One process only, and no float16 gradient scaler (the gradients are written by hand).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import cycle
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


class MLDG(TrainingMethod):
    """First-order MLDG with DomainBed's meta-train/meta-test split (see the module docstring)."""

    manual_optimization = True
    search_space: ClassVar[dict[str, dict[str, list]]] = {
        "mldg_beta": {"log_uniform": [0.1, 10.0]},
        "n_meta_test": {"choice": [1, 2]},
    }

    def __init__(self, mldg_beta: float = 1.0, n_meta_test: int = 2) -> None:
        """Settings (each one also a command-line option).

        Args:
            mldg_beta: weight of the meta-test gradient G_j (DomainBed default 1, random
                search 10^U(-1,1)).
            n_meta_test: how many of the batch's shuffled domains are meta-test (DomainBed
                default 2, random search choice {1, 2}); it must be below the number of
                training domains in a batch.
        """
        super().__init__()
        if mldg_beta < 0:
            raise ValueError(f"model.init_args.method_kwargs.mldg_beta={mldg_beta} must be >= 0")
        if n_meta_test < 1:
            raise ValueError(
                f"model.init_args.method_kwargs.n_meta_test={n_meta_test} must be >= 1"
            )
        self.mldg_beta = mldg_beta
        self.n_meta_test = n_meta_test
        self._optimizer_factory: Callable | None = None

    def configure_optimizers(self, model: MethodHost, optimizer_factory: Callable, groups: list):
        # The factory also builds each pair's fresh inner optimizer.
        self._optimizer_factory = optimizer_factory
        return [optimizer_factory(groups)]

    def shuffle_domains(self, count: int) -> list[int]:
        """A random order of the batch's `count` domains (positions in `domain_groups()`)."""
        return torch.randperm(count).tolist()

    def pairs(self, batch: TrainingBatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(rows of meta-train domain i, rows of its meta-test domain j) per pair, each cut to
        the shorter of the two."""
        groups = batch.domain_groups()
        if len(groups) <= self.n_meta_test:
            raise ValueError(
                f"method mldg needs more training domains in a batch than n_meta_test="
                f"{self.n_meta_test} (got {len(groups)}); lower "
                "model.init_args.method_kwargs.n_meta_test or train on more domains (with "
                "data.init_args.domain_proportions every batch holds every trained domain)"
            )
        order = self.shuffle_domains(len(groups))
        meta_train, meta_test = order[: len(groups) - self.n_meta_test], order[-self.n_meta_test :]
        pairs = []
        for i, j in zip(meta_train, cycle(meta_test)):
            rows_i, rows_j = groups[i][1], groups[j][1]
            size = min(len(rows_i), len(rows_j))
            pairs.append((rows_i[:size], rows_j[:size]))
        return pairs

    def inner_optimizer(self, model: MethodHost, copy: dict[str, torch.Tensor]):
        """A fresh optimizer of the model's kind over the copy, with the outer optimizer's
        current settings group by group (learning rate after multipliers and schedule)."""
        outer = model.optimizers().optimizer
        names = {id(tensor): name for name, tensor in network_tensors(model).items()}
        groups = []
        for group in outer.param_groups:
            settings = {key: value for key, value in group.items() if key != "params"}
            groups.append({**settings, "params": [copy[names[id(p)]] for p in group["params"]]})
        return self._optimizer_factory(groups)

    def manual_training_step(self, model: MethodHost, batch: TrainingBatch) -> MethodOutput:
        check_manual_support(model, "mldg", hand_made_gradients=True)
        optimizer = model.optimizers()
        network = {
            name: tensor for name, tensor in network_tensors(model).items() if tensor.requires_grad
        }
        parameters = list(network.values())
        num_domains = len(batch.domain_groups())
        gradients = [torch.zeros_like(p) for p in parameters]
        objective = torch.zeros((), device=batch.images.device)
        logits, labels = [], []
        for rows_i, rows_j in self.pairs(batch):
            loss_i, logits_i = model.classification_loss(
                model.features(batch.images[rows_i]), batch.labels[rows_i], batch.domains[rows_i]
            )
            grads_i = torch.autograd.grad(loss_i, parameters, allow_unused=True)
            copy = clone_network(model)
            for name, grad in zip(network, grads_i, strict=True):
                # a copy: G_i is also summed below, whatever the optimizer does to .grad
                copy[name].grad = None if grad is None else grad.clone()
            self.inner_optimizer(model, copy).step()
            loss_j, _ = classification_loss_with(
                model, copy, batch.images[rows_j], batch.labels[rows_j], batch.domains[rows_j]
            )
            copied = [copy[name] for name in network]
            grads_j = torch.autograd.grad(loss_j, copied, allow_unused=True)
            for total, g_i, g_j in zip(gradients, grads_i, grads_j, strict=True):
                if g_i is not None:
                    total.add_(g_i / num_domains)
                if g_j is not None:
                    total.add_(self.mldg_beta * g_j / num_domains)
            objective = objective + (loss_i.detach() + self.mldg_beta * loss_j.detach())
            logits.append(logits_i.detach())
            labels.append(batch.labels[rows_i])
        optimizer.zero_grad()
        for parameter, gradient in zip(parameters, gradients, strict=True):
            parameter.grad = gradient
        optimizer_step(model, optimizer, counted=True)
        return MethodOutput(objective / num_domains, torch.cat(logits), torch.cat(labels))

    def extra_repr(self) -> str:
        return f"mldg_beta={self.mldg_beta}, n_meta_test={self.n_meta_test}"
