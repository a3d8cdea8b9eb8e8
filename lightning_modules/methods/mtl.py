"""MTL: marginal transfer learning (Blanchard, Deshmukh, Dogan, Lee, Scott, "Domain
Generalization by Marginal Transfer Learning", JMLR 2021, arXiv:1711.07910), as DomainBed
implements it, without DomainBed's noise bug.

The classifier reads, beside each sample's features, an embedding of its domain's marginal
distribution: the mean of the domain's features. Training keeps a running embedding per domain;
at evaluation a domain's embedding is the mean of its samples' features in the batch, so an unseen
domain is described by its own images:

    training, domain d:  e_d = m * mean_i f(x_i) + (1 - m) * E[d];  E[d] <- e_d (detached)
    evaluation:          e = mean of f over the batch's samples of the same domain
    logits = h(concat[f(x), e])     (the heads read 2 * feature_dim inputs)
    loss = sum_d CE_d               (a sum over domains, not a mean, as DomainBed)

with m = `mtl_ema` (the weight of the new batch mean) and E the buffer `embeddings` (one row per
domain of `domain_names`, zeros at first; in the checkpoint: a resumed run continues with it). One
backbone pass per domain (each domain's BatchNorm statistics are its own, as in DomainBed's MTL).

Deviation from DomainBed (HEAD b93c22a and [DB-2020]), on purpose: DomainBed's `predict` calls
`.normal_()` on the embedding in place before the concatenation, so its classifier reads N(0, 1)
noise instead of e, in training and at test time alike, and the method reduces to ERM with a
noise input. This implementation follows the paper: the heads read e. Where the paper is silent
the reference is followed: the embedding of the current batch carries the gradient of its batch
mean (DomainBed's graph before the noise), the stored E[d] does not.

Defaults / random search: `mtl_ema` 0.99 / choice {0.5, 0.9, 0.99, 1}.

In this project `attach` rebuilds `model.head` (every domain head and the shared head, when
there is one) with 2 * feature_dim inputs; the model's `head_inputs` hook makes every head read
concat[f(x), e], in training, validation, test and prediction. Evaluation batches that mix
domains get one embedding per domain; e depends on which samples share the batch, as in
DomainBed, where each test domain is evaluated in batches of its own.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from lightning_modules.methods.base import MethodHost, MethodOutput, TrainingBatch, TrainingMethod
from lightning_modules.methods.penalties import per_domain_forward
from lightning_modules.models.heads import MultiDomainHead


class MTL(TrainingMethod):
    """Marginal transfer learning (DomainBed's, without the noise): heads read each sample's
    features beside its domain's mean feature (a running mean in training).

    Logs `train/embedding_norm`, the mean norm of the batch's domain embeddings.
    """

    search_space: ClassVar[dict[str, dict[str, list]]] = {
        "mtl_ema": {"choice": [0.5, 0.9, 0.99, 1.0]}
    }

    def __init__(self, mtl_ema: float = 0.99) -> None:
        """Settings (each one also a command-line option).

        Args:
            mtl_ema: weight of the current batch's mean feature in a domain's running
                embedding (1: the batch mean alone; DomainBed default 0.99, random search
                choice {0.5, 0.9, 0.99, 1}).
        """
        super().__init__()
        if not 0.0 <= mtl_ema <= 1.0:
            raise ValueError(f"model.init_args.method_kwargs.mtl_ema={mtl_ema} must be in [0, 1]")
        self.mtl_ema = mtl_ema
        self.register_buffer("embeddings", torch.zeros(0, 0))

    def attach(self, model: MethodHost) -> None:
        head = model.head
        first = next(iter(head.heads.values()))
        width = first.in_features
        model.head = MultiDomainHead(
            2 * width,
            first.out_features,
            head.domain_names,
            trained_domains=head.trained_domains,
            shared_head=head.shared is not None,
        )
        self.embeddings = torch.zeros(len(model.domain_names), width)

    def domain_embeddings(self, features: Tensor, domains: Tensor, training: bool) -> Tensor:
        """e for every sample (B, feature_dim): its domain's batch mean, in training mixed with
        the running embedding (`mtl_ema`); the running embedding is not changed here."""
        present, inverse = torch.unique(domains, return_inverse=True)
        means = torch.stack([features[inverse == k].mean(0) for k in range(len(present))])
        if training:
            stored = self.embeddings.index_select(0, present).to(means.dtype)
            means = self.mtl_ema * means + (1 - self.mtl_ema) * stored
        return means[inverse]

    def head_inputs(self, model: MethodHost, features: Tensor, domains: Tensor) -> Tensor:
        embeddings = self.domain_embeddings(features, domains, model.training)
        return torch.cat([features, embeddings], dim=1)

    def training_loss(self, model: MethodHost, batch: TrainingBatch) -> MethodOutput:
        forwards = per_domain_forward(model, batch)
        loss = batch.images.new_zeros(())
        logits_seen, norms = [], []
        for forward in forwards:
            loss_d, logits_d = model.classification_loss(
                forward.features, forward.labels, forward.domains
            )
            loss = loss + loss_d
            logits_seen.append(logits_d)
            with torch.no_grad():
                updated = self.domain_embeddings(forward.features, forward.domains, True)[0]
                self.embeddings[forward.domain] = updated.to(self.embeddings.dtype)
                norms.append(updated.norm())
        return MethodOutput(
            loss,
            torch.cat(logits_seen),
            torch.cat([forward.labels for forward in forwards]),
            metrics={"embedding_norm": torch.stack(norms).mean()},
        )
