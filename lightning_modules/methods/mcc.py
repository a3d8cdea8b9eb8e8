"""MCC: minimum class confusion (Jin, Wang, Long, Wang, "Minimum Class Confusion for Versatile
Domain Adaptation", ECCV 2020, arXiv:1912.03699), as the Transfer-Learning-Library (TLlib)
implements it.

On the unlabelled target batch alone, the loss penalises how much the classifier confuses
classes with each other, weighting confident samples more:

    P = softmax(logits_t / T)                          (B, classes), temperature T = 2.5
    w = 1 + exp(-H(P)), H detached (TLlib's epsilon 1e-5 inside the log), rescaled to sum to B
    C = (P * w)^T P                                    (classes, classes), symmetric
    C~[i, j] = C[i, j] / sum_k C[k, j]                 column normalisation (TLlib divides by
                                                       the row sums, equal by symmetry)
    mcc = (sum_ij C~[i, j] - trace C~) / classes
    loss = CE(source) + weight * mcc

No discriminator and no gradient reversal: the gradient of mcc reaches the heads, the bottleneck
and the backbone. Source and target go through the backbone and the bottleneck in one pass
(TLlib's), the source's cross-entropy through each sample's head, the target's logits the
model's prediction for a domain without a head (with one source domain, that domain's head, as
in TLlib).

Defaults (TLlib's `mcc.py`): temperature 2.5, trade-off `weight` 1, bottleneck 256; TLlib's
Office-Home script sets the bottleneck to 2048 (configs/adaptation/mcc.yaml). No random search:
TLlib publishes fixed settings, and DomainBed lacks the method.

Recipe (TLlib, Office-Home, ResNet-50; configs/adaptation/mcc.yaml): one SGD, momentum 0.9,
Nesterov, weight decay 1e-3, lr 0.005 * (1 + 0.001 i)^(-0.75) per iteration i
(`lightning_modules.optimization.InverseDecayLR`), backbone at 0.1x; batch 36 source + 36
target; 30 epochs of 1000 iterations.

State: the bottleneck only (in the checkpoint).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_modules.methods.base import MethodHost, MethodOutput, TrainingBatch
from lightning_modules.methods.bottleneck import BottleneckMethod, entropy


def mcc_loss(logits: Tensor, temperature: float = 2.5) -> Tensor:
    """The class confusion of a (target) batch's logits, (sum C~ - trace C~) / classes."""
    count, num_classes = logits.shape
    probabilities = F.softmax(logits / temperature, dim=1)
    weights = 1.0 + torch.exp(-entropy(probabilities).detach())
    weights = count * weights / weights.sum()
    confusion = (probabilities * weights.unsqueeze(1)).t() @ probabilities
    confusion = confusion / confusion.sum(dim=0, keepdim=True)
    return (confusion.sum() - confusion.trace()) / num_classes


class MCC(BottleneckMethod):
    """Minimum class confusion on the target batch (TLlib's).

    Logs `train/class_confusion` (the mcc term).
    """

    search_space: ClassVar[dict[str, dict[str, list]]] = {}

    def __init__(
        self, temperature: float = 2.5, weight: float = 1.0, bottleneck_dim: int | None = 256
    ) -> None:
        """Settings (each one also a command-line option).

        Args:
            temperature: T of the softmax the confusion is computed from (TLlib 2.5).
            weight: trade-off of the mcc term (TLlib `--trade-off`, 1).
            bottleneck_dim: width of the bottleneck Linear-BatchNorm-ReLU between backbone and
                heads (TLlib 256, 2048 in its Office-Home script); null for none.
        """
        super().__init__(bottleneck_dim)
        if temperature <= 0:
            raise ValueError(f"model.init_args.method_kwargs.temperature={temperature} must be > 0")
        if weight < 0:
            raise ValueError(f"model.init_args.method_kwargs.weight={weight} must be >= 0")
        self.temperature = temperature
        self.weight = weight

    def training_loss(self, model: MethodHost, batch: TrainingBatch) -> MethodOutput:
        step = self.source_and_target(model, batch)
        confusion = mcc_loss(step.target_logits, self.temperature)
        return MethodOutput(
            step.loss + self.weight * confusion,
            step.source_logits,
            batch.labels,
            metrics={"class_confusion": confusion},
        )
