"""IRM: invariant risk minimisation (Arjovsky, Bottou, Gulrajani, Lopez-Paz, 2019,
arXiv:1907.02893), IRMv1 as DomainBed implements it.

The classifier should be optimal for every domain at once: the penalty is the squared gradient of
each domain's risk with respect to a dummy scale w on the logits, at w = 1. As in DomainBed, the
square is estimated without bias from two halves of the domain's minibatch (even and odd
positions):

    P_d = (dCE(w z_d[0::2], y_d[0::2]) / dw) * (dCE(w z_d[1::2], y_d[1::2]) / dw)   at w = 1
    loss = mean_d CE_d + lambda_t * mean_d P_d

with lambda_t = `irm_lambda` once `irm_penalty_anneal_iters` updates are done and 1 before. The
penalty is differentiated through (`create_graph`). One backbone pass over the whole batch (the
domains share BatchNorm statistics, as in DomainBed's IRM), the logits then sliced per domain.

Details of DomainBed (HEAD b93c22a) followed because they change the numbers:
- The loss is not divided by lambda_t (the IRM authors' code divides by it when lambda > 1).
- At the update where the weight jumps (update count == `irm_penalty_anneal_iters`), DomainBed
  re-creates Adam, wiping its moments; here the optimizer's state is cleared in place at that
  update, before its step (`PenaltyAnnealing`). The learning rates stay as they are (DomainBed
  has no scheduler). The update counter is a buffer, so a resumed run keeps the schedule.
- Defaults / random search: `irm_lambda` 1e2 / 10^U(-1,5); `irm_penalty_anneal_iters`
  500 / int(10^U(0,4)).

In this project: with a shared head, its logits get their own penalty, added to the own heads'
(`classification_loss` adds its cross-entropy the same way). The penalty is the plain
cross-entropy's, without label smoothing. Each domain needs at least two samples per batch.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_modules.methods.base import MethodHost, MethodOutput, TrainingBatch, TrainingMethod
from lightning_modules.methods.penalties import (
    PenaltyAnnealing,
    check_domain_sizes,
    shared_head_logits,
)


def irm_penalty(logits: Tensor, labels: Tensor) -> Tensor:
    """DomainBed's `_irm_penalty`: the product of the gradients of the two halves' risks with
    respect to a scale on the logits, at scale 1; differentiable (`create_graph`)."""
    scale = torch.ones((), device=logits.device, dtype=logits.dtype, requires_grad=True)
    loss_even = F.cross_entropy(logits[0::2] * scale, labels[0::2])
    loss_odd = F.cross_entropy(logits[1::2] * scale, labels[1::2])
    (grad_even,) = torch.autograd.grad(loss_even, [scale], create_graph=True)
    (grad_odd,) = torch.autograd.grad(loss_odd, [scale], create_graph=True)
    return (grad_even * grad_odd).sum()


class IRM(TrainingMethod):
    """IRMv1 (DomainBed's): mean per-domain cross-entropy plus the annealed IRM penalty.

    Logs `train/nll` (the mean cross-entropy), `train/penalty` and `train/penalty_weight`.
    """

    search_space: ClassVar[dict[str, dict[str, list]]] = {
        "irm_lambda": {"log_uniform": [1e-1, 1e5]},
        "irm_penalty_anneal_iters": {"int_log_uniform": [1, 10_000]},
    }

    def __init__(self, irm_lambda: float = 1e2, irm_penalty_anneal_iters: int = 500) -> None:
        """Settings (each one also a command-line option).

        Args:
            irm_lambda: weight of the IRM penalty once annealing is over (DomainBed default
                1e2, random search 10^U(-1,5)).
            irm_penalty_anneal_iters: updates with penalty weight 1 before `irm_lambda`
                applies; the optimizer's state is cleared at that update (default 500, random
                search int(10^U(0,4))).
        """
        super().__init__()
        if irm_lambda < 0 or irm_penalty_anneal_iters < 0:
            raise ValueError(
                "model.init_args.method_kwargs: irm_lambda and irm_penalty_anneal_iters must be "
                f">= 0, got {irm_lambda} and {irm_penalty_anneal_iters}"
            )
        self.annealing = PenaltyAnnealing(irm_lambda, irm_penalty_anneal_iters)

    def training_loss(self, model: MethodHost, batch: TrainingBatch) -> MethodOutput:
        check_domain_sizes(batch, 2, "irm", "the penalty pairs its even and odd halves")
        features = model.features(batch.images)
        nll, penalty = [], []
        logits_seen, labels_seen = [], []
        for _, rows in batch.domain_groups():
            features_d, labels_d, domains_d = (
                features[rows],
                batch.labels[rows],
                batch.domains[rows],
            )
            loss_d, logits_d = model.classification_loss(features_d, labels_d, domains_d)
            penalty_d = irm_penalty(logits_d, labels_d)
            shared = shared_head_logits(self, model, features_d, domains_d)
            if shared is not None:
                penalty_d = penalty_d + irm_penalty(shared, labels_d)
            nll.append(loss_d)
            penalty.append(penalty_d)
            logits_seen.append(logits_d)
            labels_seen.append(labels_d)
        nll_mean, penalty_mean = torch.stack(nll).mean(), torch.stack(penalty).mean()
        weight = self.annealing.step(model)
        return MethodOutput(
            nll_mean + weight * penalty_mean,
            torch.cat(logits_seen),
            torch.cat(labels_seen),
            metrics={"nll": nll_mean, "penalty": penalty_mean, "penalty_weight": weight},
        )
