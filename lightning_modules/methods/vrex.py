"""VREx: variance risk extrapolation (Krueger et al., ICML 2021, arXiv:2003.00688), as
DomainBed implements it.

The risks of the training domains should be equal: the penalty is their population variance,

    loss = mean_d L_d + lambda_t * mean_d (L_d - mean_e L_e)^2

with L_d the cross-entropy of domain d's minibatch and lambda_t = `vrex_lambda` once
`vrex_penalty_anneal_iters` updates are done and 1 before. One backbone pass over the whole
batch (the domains share BatchNorm statistics, as in DomainBed's VREx), the logits then sliced per
domain.

Details of DomainBed (HEAD b93c22a) followed because they change the numbers:
- The variance is the population one (divided by D, not D - 1).
- At the update where the weight jumps (update count == `vrex_penalty_anneal_iters`), Adam's
  moments are wiped (DomainBed re-creates Adam, "like IRM"); here the optimizer's state is cleared
  in place at that update, before its step (`PenaltyAnnealing`). The update counter is a buffer,
  so a resumed run keeps the schedule.
- Defaults / random search: `vrex_lambda` 1e1 / 10^U(-1,5); `vrex_penalty_anneal_iters`
  500 / int(10^U(0,4)).

In this project L_d is `classification_loss` on the domain's samples: with a shared head, its
cross-entropy is part of each L_d.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from lightning_modules.methods.base import MethodHost, MethodOutput, TrainingBatch, TrainingMethod
from lightning_modules.methods.penalties import PenaltyAnnealing


class VREx(TrainingMethod):
    """V-REx (DomainBed's): mean per-domain risk plus the annealed variance of the risks.

    Logs `train/nll` (the mean risk), `train/penalty` and `train/penalty_weight`.
    """

    search_space: ClassVar[dict[str, dict[str, list]]] = {
        "vrex_lambda": {"log_uniform": [1e-1, 1e5]},
        "vrex_penalty_anneal_iters": {"int_log_uniform": [1, 10_000]},
    }

    def __init__(self, vrex_lambda: float = 1e1, vrex_penalty_anneal_iters: int = 500) -> None:
        """Settings (each one also a command-line option).

        Args:
            vrex_lambda: weight of the variance penalty once annealing is over (DomainBed
                default 1e1, random search 10^U(-1,5)).
            vrex_penalty_anneal_iters: updates with penalty weight 1 before `vrex_lambda`
                applies; the optimizer's state is cleared at that update (default 500, random
                search int(10^U(0,4))).
        """
        super().__init__()
        if vrex_lambda < 0 or vrex_penalty_anneal_iters < 0:
            raise ValueError(
                "model.init_args.method_kwargs: vrex_lambda and vrex_penalty_anneal_iters must "
                f"be >= 0, got {vrex_lambda} and {vrex_penalty_anneal_iters}"
            )
        self.annealing = PenaltyAnnealing(vrex_lambda, vrex_penalty_anneal_iters)

    def training_loss(self, model: MethodHost, batch: TrainingBatch) -> MethodOutput:
        features = model.features(batch.images)
        losses, logits_seen, labels_seen = [], [], []
        for _, rows in batch.domain_groups():
            loss_d, logits_d = model.classification_loss(
                features[rows], batch.labels[rows], batch.domains[rows]
            )
            losses.append(loss_d)
            logits_seen.append(logits_d)
            labels_seen.append(batch.labels[rows])
        risks = torch.stack(losses)
        mean = risks.mean()
        penalty = ((risks - mean) ** 2).mean()
        weight = self.annealing.step(model)
        return MethodOutput(
            mean + weight * penalty,
            torch.cat(logits_seen),
            torch.cat(labels_seen),
            metrics={"nll": mean, "penalty": penalty, "penalty_weight": weight},
        )
