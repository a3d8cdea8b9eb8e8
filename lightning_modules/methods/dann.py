"""DANN: unsupervised domain adaptation by backpropagation (Ganin & Lempitsky, ICML 2015,
arXiv:1409.7495; Ganin et al., JMLR 2016, arXiv:1505.07818).

A domain discriminator learns to tell source features from target features; a gradient reversal
layer between the backbone and the discriminator makes the backbone learn features that fool
it, i.e. features whose distribution is the same on both sides.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.methods.base import MethodHost, MethodOutput, TrainingBatch, TrainingMethod


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient is multiplied by `-weight` on the way back."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return inputs.view_as(inputs)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.weight * grad_output, None


def reverse_gradient(inputs: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    return GradientReversal.apply(inputs, weight)


def dann_schedule(progress: float) -> float:
    """Ganin et al.'s reversal weight, 2 / (1 + exp(-10 p)) - 1 for training progress p in
    [0, 1]: 0 at the start, when the features are still noise, rising to nearly 1."""
    progress = min(max(progress, 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


class DomainDiscriminator(nn.Module):
    """Source-vs-target classifier on pooled features: the paper's 2-hidden-layer MLP."""

    def __init__(self, in_features: int, hidden_features: int = 1024) -> None:
        """Settings (each one also a command-line option).

        Args:
            in_features: dimension of the backbone's pooled features.
            hidden_features: width of the two hidden layers.
        """
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, hidden_features),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(hidden_features, hidden_features),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(hidden_features, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """One logit per sample: > 0 means "target"."""
        return self.layers(features).squeeze(1)


def dann_loss(
    discriminator: nn.Module,
    source_features: torch.Tensor,
    target_features: torch.Tensor,
    weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(domain loss, discriminator accuracy) with the gradient into the features reversed and
    scaled by `weight`; the discriminator itself gets the plain gradient (it minimises the loss,
    the backbone maximises it)."""
    features = torch.cat([source_features, target_features])
    domain_labels = torch.cat(
        [
            source_features.new_zeros(len(source_features)),
            target_features.new_ones(len(target_features)),
        ]
    )
    logits = discriminator(reverse_gradient(features, weight))
    loss = F.binary_cross_entropy_with_logits(logits, domain_labels)
    accuracy = ((logits > 0).float() == domain_labels).float().mean()
    return loss, accuracy


class DANN(TrainingMethod):
    """Domain-adversarial training to unlabelled targets (Ganin et al., JMLR 2016).

    One backbone pass over the labelled source batch and the unlabelled target batch together
    (BatchNorm sees both alike, as in the paper); the loss is the source cross-entropy plus the
    discriminator's binary cross-entropy, with the gradient into the features reversed and
    scaled by `weight * dann_schedule(progress)`. The discriminator is trained in the same
    optimizer step, in its own parameter group (`discriminator`), at the heads' learning rate.
    Logs `train/domain_loss`, `train/domain_acc` and `train/adaptation_weight`.
    """

    needs_target_domains = True

    def __init__(self, weight: float = 1.0, hidden_features: int = 1024) -> None:
        """Settings (each one also a command-line option).

        Args:
            weight: scale of the reversed gradient; it is multiplied by Ganin et al.'s schedule
                2 / (1 + exp(-10 p)) - 1 over training progress p.
            hidden_features: width of the domain discriminator's two hidden layers.
        """
        super().__init__()
        if weight < 0:
            raise ValueError(f"model.init_args.method_kwargs.weight={weight} must be >= 0")
        self.weight = weight
        self.hidden_features = hidden_features
        self.discriminator: DomainDiscriminator | None = None

    def attach(self, model: MethodHost) -> None:
        self.discriminator = DomainDiscriminator(model.backbone.feature_dim, self.hidden_features)

    def training_loss(self, model: MethodHost, batch: TrainingBatch) -> MethodOutput:
        if batch.target_images is None:
            raise ValueError(
                "method dann needs unlabelled target images in every training batch; set "
                "data.init_args.target_domains (e.g. configs/officehome/art_to_clipart.yaml)"
            )
        source_images, target_images = batch.images, batch.target_images
        features = model.features(torch.cat([source_images, target_images]))
        source_features, target_features = features.split([len(source_images), len(target_images)])
        loss, logits = model.classification_loss(source_features, batch.labels, batch.domains)
        weight = self.weight * dann_schedule(model.training_progress())
        domain_loss, domain_accuracy = dann_loss(
            self.discriminator, source_features, target_features, weight
        )
        return MethodOutput(
            loss + domain_loss,
            logits,
            batch.labels,
            metrics={
                "domain_loss": domain_loss,
                "domain_acc": domain_accuracy,
                "adaptation_weight": weight,
            },
        )

    def parameter_groups(self) -> list[dict]:
        return [
            {
                "name": "discriminator",
                "params": list(self.discriminator.parameters()),
                "lr_multiplier": 1.0,
            }
        ]
