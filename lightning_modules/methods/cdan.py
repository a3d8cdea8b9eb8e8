"""CDAN and CDAN+E: conditional adversarial domain adaptation (Long, Cao, Wang, Jordan, NeurIPS
2018, arXiv:1705.10667), as the Transfer-Learning-Library (TLlib) implements it.

A domain discriminator tells source from target, not on the features f alone (DANN) but on
their multilinear conditioning by the classifier's prediction g, so that the class-conditional
distributions are aligned:

    f = bottleneck(backbone(x))            256-d: Linear, BatchNorm1d, ReLU (TLlib's default)
    g = softmax(logits), detached          the prediction conditions, it is not trained by D
    T(f, g) = vec(g (x) f)                 classes x d inputs: entry c * d + k is g_c f_k
    T(f, g) = (R_f f) * (R_g g) / sqrt(r)  randomized: fixed N(0, 1) R_f (d x r), R_g (classes x r)
    D: Linear(in, 1024), BN, ReLU, Linear(1024, 1024), BN, ReLU, Linear(1024, 1)
    transfer = BCE(D(GRL(T(f, g))), 1 for source, 0 for target)     mean over source + target
    loss = CE(source) + weight * transfer

The gradient reversal layer (GRL) passes T forward and multiplies its gradient by
-lambda_i, lambda_i = 2 / (1 + exp(-i / 1000)) - 1 with i the number of earlier training
forward passes (TLlib's `WarmStartGradientReverseLayer(alpha=1, lo=0, hi=1, max_iters=1000,
auto_step=True)`): 0 at first, 0.46 after 1000 steps, 0.76 after 2000. D descends the BCE, the
bottleneck and backbone ascend it (through the reversal); g is detached, so the heads get no
gradient from the transfer term.

CDAN+E (`entropy: true`) weights each sample's BCE by w = 1 + exp(-H(g)) (H with TLlib's
epsilon 1e-5 inside the log), rescaled so that the weights of the 2B samples sum to 2B: confident
predictions count more.

Defaults (TLlib's `cdan.py`): bottleneck 256, trade-off `weight` 1, discriminator width 1024,
full map (`randomized: false`; TLlib's Office-Home scripts use neither `-r` nor `--entropy`, so
TLlib's published CDAN numbers are plain CDAN with the full map), `randomized_dim` 1024. The
paper switches to the randomized map when the full map is too large; its exact rule is not
known here, so it is an option. Sizes: the full map of a ResNet-50 through the 256-d bottleneck
on Office-Home's 65 classes has 65 x 256 = 16,640 dimensions, so D's first layer has 17.0M
weights (16,640 x 1024); the randomized map has `randomized_dim` dimensions whatever the classes.
No random search: TLlib publishes fixed settings, and DomainBed lacks the method.

State, all in the checkpoint (a resumed fit continues exactly): the discriminator, the
bottleneck, the GRL's forward count (buffer `grl_steps`) and the randomized map's matrices
(buffers `mapping.feature_matrix`, `mapping.class_matrix`, drawn from torch's global generator
when the model is built, so from the seed; TLlib keeps them in plain attributes and does not save
them).

Recipe (TLlib, Office-Home, ResNet-50; configs/adaptation/cdan.yaml): one SGD, momentum 0.9,
Nesterov, weight decay 1e-3, lr 0.01 * (1 + 0.001 i)^(-0.75) per iteration i
(`lightning_modules.optimization.InverseDecayLR`), backbone at 0.1x; batch 32 source + 32 target;
30 epochs of 1000 iterations.

Deviations from TLlib: the discriminator's sigmoid is folded into the loss
(binary_cross_entropy_with_logits: the same value, computed stably); the GRL counts training
steps of this method (calls of `training_loss`), which equal TLlib's forward calls; the target's
logits are the model's prediction for a domain without a head (with one source domain, that
domain's head, as in TLlib); with several source domains each source sample goes through its own
domain's head.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.methods.base import MethodHost, MethodOutput, TrainingBatch
from lightning_modules.methods.bottleneck import BottleneckMethod, entropy
from lightning_modules.methods.dann import reverse_gradient

#: TLlib's GRL warm start: lambda_i = 2 / (1 + exp(-i / GRL_STEPS)) - 1.
GRL_STEPS = 1000


def grl_coefficient(steps: int) -> float:
    """TLlib's warm-start reversal weight after `steps` earlier forward passes."""
    return 2.0 / (1.0 + math.exp(-steps / GRL_STEPS)) - 1.0


def multilinear_map(features: Tensor, predictions: Tensor) -> Tensor:
    """vec(g (x) f): (B, classes * d), entry c * d + k = g_c * f_k."""
    return torch.bmm(predictions.unsqueeze(2), features.unsqueeze(1)).flatten(1)


class RandomizedMultilinearMap(nn.Module):
    """(R_f f) * (R_g g) / sqrt(r) with fixed N(0, 1) matrices, kept as buffers (checkpointed)."""

    def __init__(self, feature_dim: int, num_classes: int, output_dim: int = 1024) -> None:
        """Settings.

        Args:
            feature_dim: d, the width of f.
            num_classes: the width of g.
            output_dim: r, the width of the map.
        """
        super().__init__()
        self.output_dim = output_dim
        self.register_buffer("feature_matrix", torch.randn(feature_dim, output_dim))
        self.register_buffer("class_matrix", torch.randn(num_classes, output_dim))

    def forward(self, features: Tensor, predictions: Tensor) -> Tensor:
        mapped = (features @ self.feature_matrix) * (predictions @ self.class_matrix)
        return mapped / math.sqrt(self.output_dim)


class FullMultilinearMap(nn.Module):
    """vec(g (x) f), as a module beside the randomized one."""

    def forward(self, features: Tensor, predictions: Tensor) -> Tensor:
        return multilinear_map(features, predictions)


class ConditionalDiscriminator(nn.Sequential):
    """TLlib's `DomainDiscriminator` with BatchNorm: one logit per sample, > 0 for "source"."""

    def __init__(self, in_features: int, hidden_features: int = 1024) -> None:
        """Settings.

        Args:
            in_features: the width of the map T(f, g).
            hidden_features: the width of the two hidden layers.
        """
        super().__init__(
            nn.Linear(in_features, hidden_features),
            nn.BatchNorm1d(hidden_features),
            nn.ReLU(),
            nn.Linear(hidden_features, hidden_features),
            nn.BatchNorm1d(hidden_features),
            nn.ReLU(),
            nn.Linear(hidden_features, 1),
        )

    def forward(self, inputs: Tensor) -> Tensor:
        return super().forward(inputs).squeeze(1)


def entropy_weights(predictions: Tensor) -> Tensor:
    """CDAN+E's w = 1 + exp(-H(g)), rescaled to sum to the number of samples."""
    weights = 1.0 + torch.exp(-entropy(predictions))
    return weights / weights.sum() * len(weights)


def cdan_loss(
    discriminator: nn.Module,
    mapping: nn.Module,
    features: Tensor,
    logits: Tensor,
    num_source: int,
    coefficient: float,
    entropy_conditioning: bool = False,
) -> tuple[Tensor, Tensor]:
    """(transfer loss, discriminator accuracy) of source rows then target rows.

    Args:
        discriminator: D, logits > 0 for source.
        mapping: T(f, g).
        features: f of the source rows then the target rows.
        logits: the classifier's logits of the same rows (g = their softmax, detached).
        num_source: how many leading rows are source.
        coefficient: the GRL's lambda: the gradient into T is multiplied by -lambda.
        entropy_conditioning: CDAN+E's per-sample weights.
    """
    predictions = F.softmax(logits, dim=1).detach()
    domain_logits = discriminator(reverse_gradient(mapping(features, predictions), coefficient))
    labels = torch.zeros_like(domain_logits)
    labels[:num_source] = 1.0
    weight = entropy_weights(predictions) if entropy_conditioning else None
    loss = F.binary_cross_entropy_with_logits(domain_logits, labels, weight=weight)
    accuracy = ((domain_logits > 0).float() == labels).float().mean()
    return loss, accuracy


class CDAN(BottleneckMethod):
    """Conditional domain adversarial training (CDAN; CDAN+E with `entropy: true`), TLlib's.

    Logs `train/domain_loss` (the transfer BCE), `train/domain_acc` and
    `train/adaptation_weight` (the GRL's lambda).
    """

    search_space: ClassVar[dict[str, dict[str, list]]] = {}

    def __init__(
        self,
        weight: float = 1.0,
        entropy: bool = False,
        randomized: bool = False,
        randomized_dim: int = 1024,
        bottleneck_dim: int | None = 256,
        hidden_features: int = 1024,
    ) -> None:
        """Settings (each one also a command-line option).

        Args:
            weight: trade-off of the transfer loss (TLlib `--trade-off`, 1).
            entropy: CDAN+E: weight each sample's discriminator loss by 1 + exp(-H(g)).
            randomized: use the randomized multilinear map (R_f f) * (R_g g) / sqrt(r) instead
                of the full vec(g (x) f) (classes x bottleneck_dim inputs to the
                discriminator: 16,640 for Office-Home through a 256-d bottleneck).
            randomized_dim: r, the randomized map's width (TLlib 1024).
            bottleneck_dim: width of the bottleneck Linear-BatchNorm-ReLU between backbone and
                heads (TLlib 256); null for none (the map then reads the backbone's pooled
                features: 2048 x classes inputs for a ResNet-50).
            hidden_features: width of the discriminator's two hidden layers (TLlib 1024).
        """
        super().__init__(bottleneck_dim)
        if weight < 0:
            raise ValueError(f"model.init_args.method_kwargs.weight={weight} must be >= 0")
        if randomized_dim < 1:
            raise ValueError(
                f"model.init_args.method_kwargs.randomized_dim={randomized_dim} must be >= 1"
            )
        self.weight = weight
        self.entropy = entropy
        self.randomized = randomized
        self.randomized_dim = randomized_dim
        self.hidden_features = hidden_features
        self.mapping: nn.Module = FullMultilinearMap()
        self.discriminator: ConditionalDiscriminator | None = None
        self.register_buffer("grl_steps", torch.zeros((), dtype=torch.long))

    def attach(self, model: MethodHost) -> None:
        super().attach(model)
        feature_dim = self.feature_dim(model)
        num_classes = next(iter(model.head.heads.values())).out_features
        if self.randomized:
            self.mapping = RandomizedMultilinearMap(feature_dim, num_classes, self.randomized_dim)
            width = self.randomized_dim
        else:
            width = feature_dim * num_classes
        self.discriminator = ConditionalDiscriminator(width, self.hidden_features)

    def training_loss(self, model: MethodHost, batch: TrainingBatch) -> MethodOutput:
        step = self.source_and_target(model, batch)
        coefficient = grl_coefficient(int(self.grl_steps))
        self.grl_steps += 1
        domain_loss, domain_accuracy = cdan_loss(
            self.discriminator,
            self.mapping,
            step.features,
            torch.cat([step.source_logits, step.target_logits]),
            len(batch.images),
            coefficient,
            self.entropy,
        )
        return MethodOutput(
            step.loss + self.weight * domain_loss,
            step.source_logits,
            batch.labels,
            metrics={
                "domain_loss": domain_loss,
                "domain_acc": domain_accuracy,
                "adaptation_weight": coefficient,
            },
        )

    def parameter_groups(self) -> list[dict]:
        return [
            *super().parameter_groups(),
            {
                "name": "discriminator",
                "params": list(self.discriminator.parameters()),
                "lr_multiplier": 1.0,
            },
        ]
