"""Unsupervised domain adaptation by backpropagation (DANN; Ganin & Lempitsky, ICML 2015,
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

ADAPTATION_METHODS = ("dann",)


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
        """Args:
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
