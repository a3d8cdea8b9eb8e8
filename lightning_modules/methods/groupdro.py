"""GroupDRO: distributionally robust optimisation over the domains (Sagawa, Koh, Hashimoto,
Liang, ICLR 2020, arXiv:1911.08731), as DomainBed implements it.

A weight q_d per domain follows an exponentiated-gradient ascent on the domains' losses, so the
worst domain gets most of the weight:

    q_d <- q_d * exp(eta * L_d.detach())   for each domain d of the batch
    q   <- q / sum(q)
    loss = sum_d q_d * L_d                  (with the updated q)

One backbone pass per domain (each domain's BatchNorm statistics are its own, as in DomainBed's
GroupDRO, which calls `predict` per minibatch).

Details of DomainBed (HEAD b93c22a) followed because they change the numbers:
- q starts at ones(D) and is normalised only after the first update (the first loss already
  uses normalised weights). DomainBed creates the buffer on its first update; here it is created
  with the model (the same ones), so that a checkpoint's q always has a buffer of its size to
  load into. q is in the checkpoint: a resumed run continues with it.
- The loss is not divided by D ([DB-2020], the commit of DomainBed's published tables, divided
  it by D; removed in January 2021).
- Defaults / random search: `groupdro_eta` 1e-2 / 10^U(-3,-1).

In this project q has one entry per trained domain (`trained_domains` order). DomainBed's batches
hold every training domain; a batch without some domain leaves its q_d as it was (it is still
part of the normalisation). L_d is `classification_loss` on the domain's samples: with a shared
head, its cross-entropy is part of L_d.

Under DDP (a process group initialised, e.g. `trainer.strategy: ddp`), q is one global state:
the update uses each domain's loss over the whole global batch, i.e. the per-rank losses L_d^r
weighted by the rank's sample count n_d^r and summed over ranks with one all-reduce,
L_d = sum_r n_d^r L_d^r / sum_r n_d^r (a domain in no rank's batch keeps its q_d). Every rank
then makes the same update, so q stays equal on all ranks. Without this, each rank would update
q from its own losses, and since q is a buffer, which DDP broadcasts from rank 0 at every forward,
every other rank's updates would be overwritten (rank 0's q would follow rank 0's data only). The
loss each rank minimises is sum_d q_d L_d^r with the global q; DDP's gradient average over ranks
then makes the step that of sum_d q_d (mean over ranks of L_d^r). Single-process runs are
unchanged (no all-reduce: L_d is the batch's own).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from lightning_modules.methods.base import MethodHost, MethodOutput, TrainingBatch, TrainingMethod
from lightning_modules.methods.penalties import per_domain_forward


class GroupDRO(TrainingMethod):
    """Group distributionally robust optimisation over the trained domains (DomainBed's).

    Logs `train/q_max`, the largest domain weight; the weights are the buffer `q`.
    """

    search_space: ClassVar[dict[str, dict[str, list]]] = {
        "groupdro_eta": {"log_uniform": [1e-3, 1e-1]}
    }

    def __init__(self, groupdro_eta: float = 1e-2) -> None:
        """Settings (each one also a command-line option).

        Args:
            groupdro_eta: step size of the exponentiated update of the domain weights q
                (DomainBed default 1e-2, random search 10^U(-3,-1)).
        """
        super().__init__()
        if groupdro_eta < 0:
            raise ValueError(
                f"model.init_args.method_kwargs.groupdro_eta={groupdro_eta} must be >= 0"
            )
        self.groupdro_eta = groupdro_eta
        self.register_buffer("q", torch.ones(0))
        self.positions: dict[int, int] = {}

    def attach(self, model: MethodHost) -> None:
        # domain index (into domain_names) -> its entry of q
        self.positions = {
            model.domain_names.index(name): position
            for position, name in enumerate(model.trained_domains)
        }
        self.q = torch.ones(len(model.trained_domains))

    def training_loss(self, model: MethodHost, batch: TrainingBatch) -> MethodOutput:
        forwards = per_domain_forward(model, batch)
        losses, positions, logits_seen = [], [], []
        for forward in forwards:
            if forward.domain not in self.positions:
                raise ValueError(
                    f"method groupdro got a training sample of domain index {forward.domain}, "
                    "which is not in model.init_args.trained_domains"
                )
            loss_d, logits_d = model.classification_loss(
                forward.features, forward.labels, forward.domains
            )
            losses.append(loss_d)
            positions.append(self.positions[forward.domain])
            logits_seen.append(logits_d)
        with torch.no_grad():
            counts = [len(forward.labels) for forward in forwards]
            updated, update = self.global_losses(positions, losses, counts)
            for position, loss_d in zip(updated, update, strict=True):
                self.q[position] *= torch.exp(self.groupdro_eta * loss_d)
            self.q /= self.q.sum()
        weights = self.q[positions]  # indexing copies: later in-place updates do not touch it
        loss = torch.dot(torch.stack(losses), weights.to(losses[0].dtype))
        return MethodOutput(
            loss,
            torch.cat(logits_seen),
            torch.cat([forward.labels for forward in forwards]),
            metrics={"q_max": self.q.max()},
        )

    def global_losses(
        self, positions: list[int], losses: list[Tensor], counts: list[int]
    ) -> tuple[list[int], list[Tensor]]:
        """The (q positions, detached losses) the update of q uses: this batch's own, or under
        DDP each domain's loss over every rank's samples (count-weighted mean, one all-reduce)."""
        losses = [loss.detach().float() for loss in losses]
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return positions, losses
        totals = self.q.new_zeros((2, len(self.q)), dtype=torch.float32)
        for position, loss, count in zip(positions, losses, counts, strict=True):
            totals[0, position] = loss * count
            totals[1, position] = count
        torch.distributed.all_reduce(totals)  # sums over ranks
        present = [p for p in range(len(self.q)) if totals[1, p] > 0]
        return present, [totals[0, p] / totals[1, p] for p in present]
