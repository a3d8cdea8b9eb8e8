"""Spectral decoupling (DomainBed's SD): the loss against cross-entropy plus the mean squared
logit written as explicit sums, and a tiny fit that learns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.helpers.domainbed_fits import (
    assert_learns,
    assert_same_gradients,
    backbone_gradient,
    own_head_logits,
    separable_batch,
    tiny_model,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:You are trying to `self.log()`", "ignore:You defined a `validation_step`"
)


@pytest.mark.parametrize("shared_head", [False, True])
def test_sd_loss_is_cross_entropy_plus_sd_reg_times_the_mean_squared_logit(
    shared_head: bool,
) -> None:
    sd_reg = 0.3
    model = tiny_model("sd", {"sd_reg": sd_reg}, shared_head=shared_head)
    model.train()
    batch = separable_batch(12, sizes=(4, 2, 3))
    output = model.method.training_loss(model, batch)
    features = model.features(batch.images)  # one pass over the batch
    heads = [own_head_logits(model, features, batch.domains)]
    if shared_head:
        heads.append(model.head.shared(features))
    expected = 0.0
    for logits in heads:
        squares = sum(value**2 for row in logits for value in row)
        # no 1/2 (DomainBed), averaged over samples and classes
        expected = expected + F.cross_entropy(logits, batch.labels)
        expected = expected + sd_reg * squares / (logits.shape[0] * logits.shape[1])
    torch.testing.assert_close(output.loss, expected)
    assert_same_gradients(backbone_gradient(output.loss, model), backbone_gradient(expected, model))


def test_sd_learns_a_tiny_separable_task() -> None:
    assert_learns("sd")
