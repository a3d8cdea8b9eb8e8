"""MMD (DomainBed's): the loss against the biased MMD^2 under DomainBed's Gaussian-kernel mixture
written with explicit loops over samples and pairs of domains, the clamp, and a tiny fit that
learns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.methods.mmd import squared_distances
from tests.helpers.domainbed_fits import (
    assert_learns,
    assert_same_gradients,
    backbone_gradient,
    own_head_logits,
    rows_of,
    separable_batch,
    tiny_model,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:You are trying to `self.log()`", "ignore:You defined a `validation_step`"
)

GAMMAS = [0.001, 0.01, 0.1, 1, 10, 100, 1000]


def kernel_mean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean over all (a, b), diagonals included, of sum_gamma exp(-gamma ||x_a - y_b||^2)."""
    total = 0.0
    for a in x:
        for b in y:
            distance = ((a - b) ** 2).sum()
            total = total + sum(torch.exp(-gamma * distance) for gamma in GAMMAS)
    return total / (len(x) * len(y))


def independent_mmd(model, batch, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    features, losses = [], []
    for rows in rows_of(batch).values():
        rows = torch.tensor(rows)
        f = model.features(batch.images[rows])  # one pass per domain
        losses.append(
            F.cross_entropy(own_head_logits(model, f, batch.domains[rows]), batch.labels[rows])
        )
        features.append(f)
    penalties = [
        kernel_mean(features[i], features[i])
        + kernel_mean(features[j], features[j])
        - 2 * kernel_mean(features[i], features[j])
        for i in range(len(features))
        for j in range(i + 1, len(features))
    ]
    penalty = sum(penalties) / len(penalties)
    return sum(losses) / len(losses) + gamma * penalty, penalty


def test_mmd_loss_is_mean_cross_entropy_plus_the_pairwise_biased_mmd() -> None:
    # float64, so that DomainBed's ||a||^2 + ||b||^2 - 2ab loses nothing against (a - b)^2
    model = tiny_model("mmd", {"mmd_gamma": 2.0}).double()
    model.train()
    batch = separable_batch(9, sizes=(4, 3, 5))
    batch.images = batch.images.double()
    output = model.method.training_loss(model, batch)
    expected, penalty = independent_mmd(model, batch, 2.0)
    assert float(penalty.detach()) > 1e-3
    torch.testing.assert_close(output.metrics["penalty"], penalty)
    torch.testing.assert_close(output.loss, expected)
    gradient = backbone_gradient(output.loss, model)
    assert_same_gradients(gradient, backbone_gradient(expected, model))
    assert not torch.allclose(gradient[0], backbone_gradient(expected - 2.0 * penalty, model)[0])


def test_squared_distances_are_clamped_where_rounding_makes_them_negative() -> None:
    generator = torch.Generator().manual_seed(0)
    x = 100 + torch.randn(6, 64, generator=generator)  # large norms: float32 cancellation
    distances = squared_distances(x, x)
    assert float(distances.min()) >= 1e-30
    exact = torch.cdist(x.double(), x.double()) ** 2
    off_diagonal = ~torch.eye(6, dtype=torch.bool)
    torch.testing.assert_close(
        distances.double()[off_diagonal], exact[off_diagonal], rtol=1e-3, atol=0.5
    )


def test_mmd_learns_a_tiny_separable_task() -> None:
    assert_learns("mmd")
