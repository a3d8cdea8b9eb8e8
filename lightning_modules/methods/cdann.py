"""CDANN: conditional adversarial domain generalisation (Li, Tian, Gong, Liu, Liu, Zhang, Tao;
ECCV 2018), as DomainBed implements it: DANN-DG (dann_dg.py, where the steps, optimizers,
defaults and random search are documented: CDANN's are the same) with the discriminator
conditioned on the class.

- Input: d_in = z + E[y], with E an `nn.Embedding(classes, feature_dim)` (torch's N(0, 1)
  initialisation) trained by the discriminator's optimizer (its own parameter group,
  `class_embeddings`).
- Class-balanced loss: L = sum_i CE_i / (n_{y_i} K), with n_c the batch's count of class c and
  K = max label in the batch + 1 (DomainBed's `one_hot(y).sum(0)`, whose length is the largest
  label + 1, not the number of classes); the weights sum to (classes present) / K. The
  gradient penalty is computed on the unweighted summed cross-entropy, as in DANN.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_modules.methods.dann_dg import DANNDG


class CDANN(DANNDG):
    """DANN-DG with the class embedding on the discriminator's input and its class-balanced
    loss (see the module docstring)."""

    method_name: ClassVar[str] = "cdann"
    conditional: ClassVar[bool] = True

    def discriminator_loss(self, logits: Tensor, domain_labels: Tensor, labels: Tensor) -> Tensor:
        counts = torch.bincount(labels)
        weights = 1.0 / (counts[labels] * len(counts)).float()
        return (weights * F.cross_entropy(logits, domain_labels, reduction="none")).sum()
