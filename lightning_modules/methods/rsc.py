"""RSC: representation self-challenging (Huang, Wang, Xing, Huang, ECCV 2020,
arXiv:2007.02454), as DomainBed implements it.

The features the classifier relies on most are muted, so that it learns to use the others:

    z = f(x);  p = h(z);  g = d(sum_i p_i[y_i]) / dz            (eq. 1)
    mask_f[i, k] = 1[g_ik < P_{100(1 - f)}(g_i)]                (eq. 2: per-sample percentile)
    c_i = softmax(p_i)[y_i] - softmax(h(z_i * mask_f_i))[y_i]   (confidence drop, section 3.3)
    mask[i] = mask_f[i] OR 1[c_i < P_{100(1 - b)}(c)]           (batch percentile: samples
                                                                 whose confidence drops least
                                                                 keep every feature)
    loss = CE(h(z * mask), y)                                   (eq. 5)

with f = `rsc_f_drop_factor`, b = `rsc_b_drop_factor`, P_q the q-th percentile (linear
interpolation, numpy's default). The masks are not differentiated. One backbone pass over the
whole batch (the domains share BatchNorm statistics, as in DomainBed's RSC).

Details of DomainBed (HEAD b93c22a) followed because they change the numbers:
- The gradient is that of the raw true-class logits (not of a softmax), signed: a feature is
  muted when its g is at or above the percentile (`g.lt(percentile)` keeps the rest).
- Defaults / random search: `rsc_f_drop_factor` and `rsc_b_drop_factor` 1/3 / U(0, 0.5).
- DomainBed computes the percentiles with numpy on the float32 values; here `torch.quantile`
  computes the same percentiles in float64 (on the device), so nothing leaves the GPU.

In this project g and the confidence drop come from each sample's own head (`model.classify`);
the loss is `classification_loss` of the masked features, so a shared head, when the model has
one, is trained on the same masked features. The logged `train/acc` is that of the unmasked
prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_modules.methods.base import MethodHost, MethodOutput, TrainingBatch, TrainingMethod


def rsc_mask(
    features: Tensor,
    logits: Tensor,
    masked_logits_of: Callable[[Tensor], Tensor],
    labels: Tensor,
    feature_drop: float,
    batch_drop: float,
) -> Tensor:
    """RSC's feature mask (1 keeps a feature), from features z that `logits` were computed from
    and `masked_logits_of(z * mask)`, the head applied to masked features; not differentiable.

    Args:
        features: z, (B, d), part of the graph of `logits`.
        logits: h(z), (B, classes).
        masked_logits_of: the head, applied to masked features.
        labels: y, (B,).
        feature_drop: f, the fraction of each sample's features to mute.
        batch_drop: b, the fraction of the batch whose features are muted.
    """
    one_hot = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    (gradient,) = torch.autograd.grad((logits * one_hot).sum(), features)
    gradient = gradient.detach().double()
    feature_threshold = torch.quantile(gradient, 1 - feature_drop, dim=1, keepdim=True)
    mask_f = gradient < feature_threshold
    with torch.no_grad():
        probabilities = logits.softmax(dim=1)
        masked_probabilities = masked_logits_of(features * mask_f.to(features.dtype)).softmax(1)
        changes = ((probabilities - masked_probabilities) * one_hot).sum(1).double()
        batch_threshold = torch.quantile(changes, 1 - batch_drop)
        mask_b = (changes < batch_threshold).unsqueeze(1)
    return (mask_f | mask_b).to(features.dtype)


class RSC(TrainingMethod):
    """Representation self-challenging (DomainBed's): cross-entropy of the features with the
    most relied-on ones muted, for the samples whose confidence drops most.

    Logs `train/kept_fraction`, the fraction of features the mask keeps.
    """

    search_space: ClassVar[dict[str, dict[str, list]]] = {
        "rsc_f_drop_factor": {"uniform": [0.0, 0.5]},
        "rsc_b_drop_factor": {"uniform": [0.0, 0.5]},
    }

    def __init__(self, rsc_f_drop_factor: float = 1 / 3, rsc_b_drop_factor: float = 1 / 3) -> None:
        """Settings (each one also a command-line option).

        Args:
            rsc_f_drop_factor: fraction of each sample's features muted (those with the largest
                gradient of the true-class logit; DomainBed default 1/3, random search
                U(0, 0.5)).
            rsc_b_drop_factor: fraction of the batch that is muted (the samples whose true-class
                probability drops most when muted; default 1/3, random search U(0, 0.5)).
        """
        super().__init__()
        for name, value in (
            ("rsc_f_drop_factor", rsc_f_drop_factor),
            ("rsc_b_drop_factor", rsc_b_drop_factor),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"model.init_args.method_kwargs.{name}={value} must be in [0, 1]")
        self.rsc_f_drop_factor = rsc_f_drop_factor
        self.rsc_b_drop_factor = rsc_b_drop_factor

    def training_loss(self, model: MethodHost, batch: TrainingBatch) -> MethodOutput:
        features = model.features(batch.images)
        logits = model.classify(features, batch.domains)
        mask = rsc_mask(
            features,
            logits,
            lambda masked: model.classify(masked, batch.domains),
            batch.labels,
            self.rsc_f_drop_factor,
            self.rsc_b_drop_factor,
        )
        loss, _ = model.classification_loss(features * mask, batch.labels, batch.domains)
        return MethodOutput(
            loss, logits.detach(), batch.labels, metrics={"kept_fraction": mask.mean()}
        )
