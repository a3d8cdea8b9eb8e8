"""Fish: outer steps against Fish written here (an explicit copy of the network, torch's Adam
over the copy kept across batches, the state-dict interpolation), the inner optimizer's state
through kill-and-resume, and a tiny fit that learns."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from tests.helpers.manual_methods import (
    fit,
    resumed_losses,
    synthetic_batches,
    tiny_fit,
    tiny_model,
)

LR = 1e-3
NETWORK = ("backbone.", "head.")


@pytest.mark.parametrize("shared_head", [False, True])
def test_outer_steps_equal_fish_by_hand(shared_head: bool) -> None:
    meta_lr = 0.5
    model = tiny_model("fish", {"meta_lr": meta_lr}, domains=3, shared_head=shared_head)
    reference = copy.deepcopy(model)
    batches = synthetic_batches(3, per_domain=4, domains=3)
    batches[1] = tuple(part[torch.randperm(12)] for part in batches[1])  # domains in any order
    losses = fit(model, batches)
    assert model.trainer.global_step == 3
    # no optimizer over the model's own parameters: the one optimizer is the inner one
    own = {id(p) for p in model.parameters()}
    inner_parameters = [p for g in model.trainer.optimizers[0].param_groups for p in g["params"]]
    assert len(model.trainer.optimizers) == 1 and not own & {id(p) for p in inner_parameters}

    # Fish by hand
    reference.train()
    inner = copy.deepcopy(reference)
    inner_adam = torch.optim.Adam(
        [p for p in (*inner.backbone.parameters(), *inner.head.parameters())], lr=LR
    )
    expected = []
    for images, labels, domains in batches:
        inner.load_state_dict(reference.state_dict())  # in place: the Adam keeps its tensors
        step_losses = []
        for domain in range(3):  # domain order
            rows = domains == domain
            features = inner.backbone(images[rows])
            loss = F.cross_entropy(inner.head(features, domains[rows]), labels[rows])
            if shared_head:
                loss = loss + F.cross_entropy(inner.head.shared(features), labels[rows])
            inner_adam.zero_grad()
            loss.backward()
            inner_adam.step()
            step_losses.append(loss.item())
        expected.append(sum(step_losses) / 3)
        theta, theta_inner = reference.state_dict(), inner.state_dict()
        reference.load_state_dict(
            {
                key: theta[key] + meta_lr * (theta_inner[key] - theta[key])
                for key in theta
                if key.startswith(NETWORK)
            },
            strict=False,
        )
    assert losses == pytest.approx(expected, rel=1e-5)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=1e-4, atol=1e-6)
    # the batch counters take DomainBed's interpolation, truncated to integers: with 3 inner
    # passes a batch, 0 -> 1.5 -> 1, 1 -> 2.5 -> 2, 2 -> 3.5 -> 3
    assert int(model.backbone.bn1.num_batches_tracked) == 3


def test_the_inner_optimizer_state_survives_kill_and_resume(tmp_path) -> None:
    whole, resumed = resumed_losses(tmp_path, "fish", domains=2)
    assert resumed == pytest.approx(whole, rel=1e-5, abs=1e-6)
    # and it matters: a fresh inner optimizer after epoch 1 gives other losses
    model = tiny_model("fish", domains=2)
    batches = synthetic_batches(2, domains=2)
    fit(model, batches)
    fresh = fit(model, batches)  # a new trainer: a new optimizer, the weights kept
    assert fresh != pytest.approx(whole[2:], rel=1e-5, abs=1e-6)


def test_a_tiny_fish_fit_learns() -> None:
    losses, accuracy, _ = tiny_fit("fish", epochs=3)
    assert sum(losses[-8:]) < 0.5 * sum(losses[:8])
    assert accuracy > 0.6  # chance: 1/3


def test_meta_lr_must_be_a_fraction() -> None:
    with pytest.raises(ValueError, match=r"meta_lr=1.5 must be in \(0, 1\]"):
        tiny_model("fish", {"meta_lr": 1.5})
