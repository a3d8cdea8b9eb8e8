"""Pieces shared by DomainBed's methods that are a loss on the per-domain batch.

- `PenaltyAnnealing`: IRM's and VREx's penalty weight (1 before `anneal_iters` updates, the
  method's weight from then on) and the optimizer reset when it jumps, with the update counter
  as a buffer, so a resumed run jumps and resets at the same step as an uninterrupted one.
- `reset_optimizer_state`: forget the optimizers' running state (Adam's moments).
- `per_domain_forward`: one backbone pass per domain (DomainBed's per-domain BatchNorm
  statistics), for GroupDRO, CORAL, MMD and MTL.
- `shared_head_logits`: the shared head's logits, so penalties on logits (IRM, SD) treat every
  head the classification loss trains alike.
- `pairwise_penalty`: CORAL's and MMD's average over the pairs of domains, and
  `PairwiseAlignment`, their common method (DomainBed's `AbstractMMD`).

In DomainBed, `update(minibatches)` gets one minibatch per training domain. Here a batch is one
tensor with a domain index per sample; `TrainingBatch.domain_groups()` gives the per-domain
minibatches in domain order, whatever the order of the samples, so the methods group inside.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from lightning_modules.methods.base import MethodHost, MethodOutput, TrainingBatch, TrainingMethod


def reset_optimizer_state(model: MethodHost) -> bool:
    """Clear the running state of every optimizer of `model` (Adam's moments and step count,
    SGD's momentum buffers), keeping its parameter groups and learning rates.

    This is DomainBed's re-creation of Adam when IRM/VREx's penalty weight jumps ("Adam doesn't
    like the sharp jump in gradient magnitudes"), done in place so that Lightning's optimizer
    (and the scheduler that holds it) stay the same objects. Called inside the training step,
    before Lightning's `optimizer.step()`, so that step starts from a fresh state, as in
    DomainBed. Returns False when the model is not attached to a Trainer (a loss computed by
    hand): there is no optimizer to reset.
    """
    try:
        optimizers = model.optimizers(use_pl_optimizer=False)
    except RuntimeError:  # LightningModule.trainer raises it off-trainer
        return False
    for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
        optimizer.state.clear()
    return True


class PenaltyAnnealing(nn.Module):
    """IRM's and VREx's schedule: the penalty weight is 1 for the first `anneal_iters` updates
    and `penalty_weight` from then on, and the optimizers' state is cleared at the update whose
    count equals `anneal_iters` (DomainBed: `update_count == *_penalty_anneal_iters`).

    The count of updates so far is the buffer `update_count` (in the checkpoint: a resumed run
    continues it). It counts calls of the method's training loss, i.e. optimizer steps when
    gradients are not accumulated over batches.
    """

    def __init__(self, penalty_weight: float, anneal_iters: int) -> None:
        """Settings.

        Args:
            penalty_weight: the weight once annealing is over (`irm_lambda`, `vrex_lambda`).
            anneal_iters: updates with weight 1 before it (`*_penalty_anneal_iters`).
        """
        super().__init__()
        self.penalty_weight = float(penalty_weight)
        self.anneal_iters = int(anneal_iters)
        self.register_buffer("update_count", torch.zeros((), dtype=torch.long))

    def current_weight(self) -> float:
        """The weight of this update's penalty."""
        return self.penalty_weight if int(self.update_count) >= self.anneal_iters else 1.0

    def step(self, model: MethodHost) -> float:
        """The weight of this update's penalty; resets the optimizers at the jump and counts
        the update. Call once per training loss."""
        weight = self.current_weight()
        if int(self.update_count) == self.anneal_iters:
            reset_optimizer_state(model)
        self.update_count += 1
        return weight

    def extra_repr(self) -> str:
        return f"penalty_weight={self.penalty_weight}, anneal_iters={self.anneal_iters}"


@dataclass
class DomainForward:
    """One domain's minibatch after its own backbone pass.

    Attributes:
        domain: The domain's index into the model's `domain_names`.
        rows: Positions of its samples in the batch.
        features: Their pooled features.
        labels: Their labels.
        domains: Their domain indices (all `domain`), for the heads' routing.
    """

    domain: int
    rows: Tensor
    features: Tensor
    labels: Tensor
    domains: Tensor


def per_domain_forward(model: MethodHost, batch: TrainingBatch) -> list[DomainForward]:
    """One backbone pass per domain present, in domain order: each domain's BatchNorm
    statistics are its own, as in DomainBed's GroupDRO, CORAL, MMD and MTL."""
    return [
        DomainForward(
            domain,
            rows,
            model.features(batch.images[rows]),
            batch.labels[rows],
            batch.domains[rows],
        )
        for domain, rows in batch.domain_groups()
    ]


def shared_head_logits(
    method: TrainingMethod, model: MethodHost, features: Tensor, domains: Tensor
) -> Tensor | None:
    """The shared head's logits when the model has one and trains it (training mode), else None.

    `model.classification_loss` adds the shared head's cross-entropy to each sample's own
    head's; penalties on logits (IRM, SD) add the shared head's penalty in the same way, so both
    classifiers get the method's term."""
    if model.head.shared is None or not model.training:
        return None
    return model.head.shared(method.head_inputs(model, features, domains))


def pairwise_penalty(
    features: list[Tensor], distance: Callable[[Tensor, Tensor], Tensor]
) -> Tensor:
    """DomainBed's alignment penalty: `distance` of every pair of domains i < j, averaged over
    the D(D-1)/2 pairs; 0 with one domain."""
    total = features[0].new_zeros(())
    pairs = 0
    for i in range(len(features)):
        for j in range(i + 1, len(features)):
            total = total + distance(features[i], features[j])
            pairs += 1
    return total / pairs if pairs else total


def check_domain_sizes(batch: TrainingBatch, minimum: int, method: str, reason: str) -> None:
    """Fail, naming the setting, when a domain has fewer than `minimum` samples in the batch."""
    for domain, rows in batch.domain_groups():
        if len(rows) < minimum:
            raise ValueError(
                f"method {method} needs at least {minimum} samples of every domain in a "
                f"training batch ({reason}); domain index {domain} has {len(rows)}. Raise "
                "data.init_args.batch_size or balance the domains with "
                "data.init_args.domain_proportions."
            )


class PairwiseAlignment(TrainingMethod):
    """DomainBed's `AbstractMMD`, the base of CORAL and MMD: one backbone pass per domain, the
    mean of the domains' cross-entropies plus `mmd_gamma` times the pairwise penalty
    (`distance` of the pooled features of every pair of domains, averaged over the pairs).

    Logs `train/nll` (the mean cross-entropy) and `train/penalty`.
    """

    search_space: ClassVar[dict[str, dict[str, list]]] = {"mmd_gamma": {"log_uniform": [1e-1, 1e1]}}

    def __init__(self, mmd_gamma: float = 1.0) -> None:
        """Settings (each one also a command-line option).

        Args:
            mmd_gamma: weight of the alignment penalty (DomainBed's name for CORAL and MMD alike;
                default 1, random search 10^U(-1,1)).
        """
        super().__init__()
        if mmd_gamma < 0:
            raise ValueError(f"model.init_args.method_kwargs.mmd_gamma={mmd_gamma} must be >= 0")
        self.mmd_gamma = mmd_gamma

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        """The penalty between two domains' features (B_i, d) and (B_j, d)."""
        raise NotImplementedError

    def training_loss(self, model: MethodHost, batch: TrainingBatch) -> MethodOutput:
        forwards = per_domain_forward(model, batch)
        losses, logits_seen = [], []
        for forward in forwards:
            loss_d, logits_d = model.classification_loss(
                forward.features, forward.labels, forward.domains
            )
            losses.append(loss_d)
            logits_seen.append(logits_d)
        nll = torch.stack(losses).mean()
        penalty = pairwise_penalty([forward.features for forward in forwards], self.distance)
        return MethodOutput(
            nll + self.mmd_gamma * penalty,
            torch.cat(logits_seen),
            torch.cat([forward.labels for forward in forwards]),
            metrics={"nll": nll, "penalty": penalty},
        )
