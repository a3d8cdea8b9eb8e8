"""Inter-domain Mixup (DomainBed's): the loss against DomainBed's cyclic pairing and mixture
written with explicit loops (same random draws), and a tiny fit that learns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from lightning_modules.methods.mixup import Mixup
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


def independent_mixup(model, batch, permutation: list[int], lambdas: list[float]) -> torch.Tensor:
    """DomainBed's update: domain pi(k) mixed with pi(k+1 mod D), both cut to the shorter
    minibatch, lambda * CE(., y_i) + (1 - lambda) * CE(., y_j), summed over pairs, / D."""
    groups = rows_of(batch)
    domains = list(groups)
    count = len(domains)
    total = 0.0
    for k in range(count):
        first, second = domains[permutation[k]], domains[permutation[(k + 1) % count]]
        size = min(len(groups[first]), len(groups[second]))
        rows_i = torch.tensor(groups[first][:size])
        rows_j = torch.tensor(groups[second][:size])
        lam = lambdas[k]
        features = model.features(lam * batch.images[rows_i] + (1 - lam) * batch.images[rows_j])
        for weight, rows in ((lam, rows_i), (1 - lam, rows_j)):
            labels = batch.labels[rows]
            loss = F.cross_entropy(own_head_logits(model, features, batch.domains[rows]), labels)
            if model.head.shared is not None:
                loss = loss + F.cross_entropy(model.head.shared(features), labels)
            total = total + weight * loss
    return total / count


@pytest.mark.parametrize("shared_head", [False, True])
def test_mixup_loss_mixes_each_domain_with_the_next_in_a_random_cycle(shared_head: bool) -> None:
    alpha = 0.4
    model = tiny_model("mixup", {"mixup_alpha": alpha}, shared_head=shared_head)
    model.train()
    batch = separable_batch(7, sizes=(5, 3, 4))  # unequal: pairs are cut to the shorter one
    torch.manual_seed(11)
    output = model.method.training_loss(model, batch)
    # the same draws, in DomainBed's order: the permutation, then one lambda per pair
    torch.manual_seed(11)
    permutation = torch.randperm(3).tolist()
    concentration = torch.tensor(alpha)
    beta = torch.distributions.Beta(concentration, concentration)
    lambdas = [float(beta.sample()) for _ in range(3)]
    expected = independent_mixup(model, batch, permutation, lambdas)
    torch.testing.assert_close(output.loss, expected)
    assert output.metrics["lambda_mean"] == pytest.approx(sum(lambdas) / 3)
    assert_same_gradients(backbone_gradient(output.loss, model), backbone_gradient(expected, model))
    # a different draw gives a different loss: the randomness is used
    torch.manual_seed(12)
    assert not torch.allclose(model.method.training_loss(model, batch).loss, output.loss)


def test_mixing_weights_follow_beta_alpha_alpha() -> None:
    torch.manual_seed(0)
    method = Mixup(mixup_alpha=0.2)
    draws = [method.sample_lambda() for _ in range(2000)]
    assert stats.kstest(draws, stats.beta(0.2, 0.2).cdf).pvalue > 1e-3


def test_mixup_learns_a_tiny_separable_task() -> None:
    assert_learns("mixup")
