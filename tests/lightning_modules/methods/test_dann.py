"""DANN: gradient reversal, the schedule, and a training step of the classifier."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datamodules.base import UNLABELLED
from lightning_modules.classifier import MultiDomainClassifier
from lightning_modules.models.adaptation import DomainDiscriminator, dann_loss, dann_schedule

# training_step is called without a Trainer here; its self.log calls are no-ops.
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log()`")


def test_gradient_reversal_flips_and_scales_the_backbone_gradient() -> None:
    torch.manual_seed(0)
    backbone, discriminator = nn.Linear(5, 4), nn.Linear(4, 1)
    source, target = torch.randn(6, 5), torch.randn(3, 5)
    weight = 0.37

    def gradients(reversal_weight: float | None):
        backbone.zero_grad()
        discriminator.zero_grad()
        features_s, features_t = backbone(source), backbone(target)
        if reversal_weight is None:  # the same loss, without the reversal layer
            logits = discriminator(torch.cat([features_s, features_t])).squeeze(1)
            labels = torch.cat([torch.zeros(6), torch.ones(3)])
            loss = F.binary_cross_entropy_with_logits(logits, labels)
        else:
            loss, _ = dann_loss(
                lambda x: discriminator(x).squeeze(1), features_s, features_t, reversal_weight
            )
        loss.backward()
        return backbone.weight.grad.clone(), discriminator.weight.grad.clone()

    plain_backbone, plain_discriminator = gradients(None)
    reversed_backbone, reversed_discriminator = gradients(weight)
    assert plain_backbone.abs().sum() > 0
    torch.testing.assert_close(reversed_backbone, -weight * plain_backbone)
    # the discriminator itself still descends its loss
    torch.testing.assert_close(reversed_discriminator, plain_discriminator)


def test_schedule_follows_ganin_et_al() -> None:
    assert dann_schedule(0.0) == 0.0
    assert dann_schedule(1.0) == pytest.approx(2 / (1 + torch.e**-10) - 1)
    assert dann_schedule(0.1) == pytest.approx(0.4621, abs=1e-4)
    assert dann_schedule(2.0) == dann_schedule(1.0)


def test_discriminator_gives_one_logit_per_sample() -> None:
    assert DomainDiscriminator(8, 4)(torch.randn(5, 8)).shape == (5,)


def tiny_dann_model() -> MultiDomainClassifier:
    torch.manual_seed(0)
    return MultiDomainClassifier(
        backbone="resnet20",
        recalibration="none",
        weights=None,
        num_classes=3,
        domain_names=["Art", "Clipart"],
        trained_domains=["Art"],
        image_size=32,
        adaptation="dann",
        discriminator_hidden_features=16,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
    )


def combined_batch(target_labels: torch.Tensor) -> dict:
    generator = torch.Generator().manual_seed(1)
    source = (torch.randn(4, 3, 32, 32, generator=generator), torch.tensor([0, 1, 2, 1]))
    target_images = torch.randn(len(target_labels), 3, 32, 32, generator=generator)
    return {
        "source": (*source, torch.zeros(4, dtype=torch.long)),
        "target": (target_images, target_labels, torch.ones(len(target_labels), dtype=torch.long)),
    }


def test_dann_step_updates_the_discriminator_and_reaches_the_backbone() -> None:
    model = tiny_dann_model()
    optimizer = model.configure_optimizers()
    assert "discriminator" in [group["name"] for group in optimizer.param_groups]
    before = [p.detach().clone() for p in model.discriminator.parameters()]
    loss = model.training_step(combined_batch(torch.full((3,), UNLABELLED)), 0)
    loss.backward()
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in model.discriminator.parameters()
    )
    with_domain_loss = model.backbone.conv1.weight.grad.clone()
    # the domain loss reaches the backbone through the reversal layer: with its weight at 0
    # (same batches, same BatchNorm statistics), the backbone's gradient differs
    model.hparams.adaptation_weight = 0.0
    model.zero_grad()
    model.training_step(combined_batch(torch.full((3,), UNLABELLED)), 0).backward()
    assert not torch.allclose(model.backbone.conv1.weight.grad, with_domain_loss)
    optimizer.step()
    after = list(model.discriminator.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))


def test_target_labels_never_reach_the_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_dann_model()
    seen_targets = []
    cross_entropy = F.cross_entropy

    def spy(logits, labels, *args, **kwargs):
        seen_targets.append(labels.clone())
        return cross_entropy(logits, labels, *args, **kwargs)

    monkeypatch.setattr(F, "cross_entropy", spy)
    # No dropout in the discriminator: the three losses must differ only through the labels.
    model.discriminator.eval()
    losses = []
    for target_labels in (
        torch.full((3,), UNLABELLED),
        torch.tensor([2, 0, 1]),
        torch.tensor([9, 9, 9]),
    ):
        losses.append(model.training_step(combined_batch(target_labels), 0).item())
    assert losses[0] == losses[1] == losses[2]
    # only the labelled source batch was classified
    assert all(torch.equal(labels, torch.tensor([0, 1, 2, 1])) for labels in seen_targets)
    assert len(seen_targets) == 3
