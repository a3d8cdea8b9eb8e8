"""CORAL (DomainBed's penalty): the loss against mean and covariance differences written with
explicit sums over samples and pairs of domains, its relation to the paper's loss, and a tiny fit
that learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_modules.methods.coral import coral_distance
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


def mean_and_covariance(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample mean and unbiased covariance, as sums over the samples."""
    mean = sum(x) / len(x)
    covariance = sum(torch.outer(row - mean, row - mean) for row in x) / (len(x) - 1)
    return mean, covariance


def independent_coral(model, batch, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, penalty): one pass per domain, mean CE + gamma * mean over pairs i < j of
    [sum_k (mu_i - mu_j)_k^2 / d + sum_kl (C_i - C_j)_kl^2 / d^2]."""
    features, losses = [], []
    for rows in rows_of(batch).values():
        rows = torch.tensor(rows)
        f = model.features(batch.images[rows])
        losses.append(
            F.cross_entropy(own_head_logits(model, f, batch.domains[rows]), batch.labels[rows])
        )
        features.append(f)
    penalties = []
    for i in range(len(features)):
        for j in range(i + 1, len(features)):
            (mean_i, cov_i), (mean_j, cov_j) = (
                mean_and_covariance(features[i]),
                mean_and_covariance(features[j]),
            )
            d = features[i].shape[1]
            penalties.append(
                ((mean_i - mean_j) ** 2).sum() / d + ((cov_i - cov_j) ** 2).sum() / d**2
            )
    penalty = sum(penalties) / len(penalties)
    return sum(losses) / len(losses) + gamma * penalty, penalty


def test_coral_loss_is_mean_cross_entropy_plus_the_pairwise_mean_and_covariance_penalty() -> None:
    model = tiny_model("coral", {"mmd_gamma": 3.0})
    model.train()
    batch = separable_batch(8, sizes=(4, 3, 5))
    output = model.method.training_loss(model, batch)
    expected, penalty = independent_coral(model, batch, 3.0)
    torch.testing.assert_close(output.metrics["penalty"], penalty)
    torch.testing.assert_close(output.loss, expected)
    gradient = backbone_gradient(output.loss, model)
    assert_same_gradients(gradient, backbone_gradient(expected, model))
    # the penalty reaches the network
    assert not torch.allclose(gradient[0], backbone_gradient(expected - 3.0 * penalty, model)[0])


def test_coral_covariance_term_is_four_times_the_papers_loss() -> None:
    """DomainBed's mean_kl (C_i - C_j)^2 = ||dC||_F^2 / d^2 = 4 x the paper's ||dC||_F^2/(4 d^2)."""
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 5, generator=generator), 2 * torch.randn(9, 5, generator=generator)
    d = x.shape[1]
    paper = np.sum((np.cov(x.numpy().T) - np.cov(y.numpy().T)) ** 2) / (4 * d**2)
    mean_term = np.mean((x.numpy().mean(0) - y.numpy().mean(0)) ** 2)
    assert float(coral_distance(x, y)) == pytest.approx(4 * paper + mean_term, rel=1e-5)


def test_coral_refuses_a_domain_with_one_sample() -> None:
    model = tiny_model("coral")
    with pytest.raises(ValueError, match=r"coral needs at least 2 samples"):
        model.method.training_loss(model, separable_batch(0, sizes=(4, 1, 4)))


def test_coral_learns_a_tiny_separable_task() -> None:
    assert_learns("coral")
