"""GroupDRO (DomainBed's): the loss and the domain weights q against the exponentiated update
written with explicit loops over two steps, kill-and-resume of q, and a tiny fit that learns."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.helpers.domainbed_fits import (
    assert_learns,
    assert_resume_is_seamless,
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


@pytest.mark.parametrize("shared_head", [False, True])
def test_groupdro_weights_the_domain_losses_by_the_exponentiated_update_of_q(
    shared_head: bool,
) -> None:
    eta = 0.7
    model = tiny_model("groupdro", {"groupdro_eta": eta}, shared_head=shared_head)
    model.train()
    q = [1.0, 1.0, 1.0]  # DomainBed: ones(D), normalised after the first update
    for seed in (5, 6):  # the second step starts from the first one's q
        batch = separable_batch(seed, sizes=(4, 3, 5))
        output = model.method.training_loss(model, batch)
        losses = []
        for domain, rows in rows_of(batch).items():
            rows = torch.tensor(rows)
            features = model.features(batch.images[rows])  # one pass per domain
            loss = F.cross_entropy(
                own_head_logits(model, features, batch.domains[rows]), batch.labels[rows]
            )
            if shared_head:
                loss = loss + F.cross_entropy(model.head.shared(features), batch.labels[rows])
            losses.append(loss)
            q[domain] *= math.exp(eta * loss.item())
        q = [value / sum(q) for value in q]
        expected = sum(weight * loss for weight, loss in zip(q, losses, strict=True))
        torch.testing.assert_close(output.loss, expected)
        torch.testing.assert_close(model.method.q, torch.tensor(q))
        assert_same_gradients(
            backbone_gradient(output.loss, model), backbone_gradient(expected, model)
        )
    # the worst domain has gained weight
    assert max(q) > 1 / 3 > min(q)


def test_groupdro_keeps_q_across_kill_and_resume(tmp_path) -> None:
    whole, _ = assert_resume_is_seamless(
        tmp_path, "groupdro", {"groupdro_eta": 1.0}, state=lambda model: model.method.q
    )
    assert not torch.allclose(whole.method.q, torch.full((3,), 1 / 3))
    assert "method.q" in whole.state_dict()


def test_groupdro_learns_a_tiny_separable_task() -> None:
    assert_learns("groupdro")
