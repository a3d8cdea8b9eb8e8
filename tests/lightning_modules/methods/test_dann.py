"""DANN as a training method: gradient reversal, the schedule, a training step of the classifier,
its loss against an independent computation, and a whole fit equal to a hand-written loop."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datamodules.base import UNLABELLED
from lightning_modules.classifier import MultiDomainClassifier
from lightning_modules.methods.dann import DomainDiscriminator, dann_loss, dann_schedule
from tests.helpers.trainers import quiet_trainer

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
        method="dann",
        method_kwargs={"hidden_features": 16},
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
    before = [p.detach().clone() for p in model.method.discriminator.parameters()]
    loss = model.training_step(combined_batch(torch.full((3,), UNLABELLED)), 0)
    loss.backward()
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0
        for p in model.method.discriminator.parameters()
    )
    with_domain_loss = model.backbone.conv1.weight.grad.clone()
    # the domain loss reaches the backbone through the reversal layer: with its weight at 0
    # (same batches, same BatchNorm statistics), the backbone's gradient differs
    model.method.weight = 0.0
    model.zero_grad()
    model.training_step(combined_batch(torch.full((3,), UNLABELLED)), 0).backward()
    assert not torch.allclose(model.backbone.conv1.weight.grad, with_domain_loss)
    optimizer.step()
    after = list(model.method.discriminator.parameters())
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
    model.method.discriminator.eval()
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


def _without_dropout(model: MultiDomainClassifier) -> MultiDomainClassifier:
    # Dropout draws would have to be consumed in the same order by both computations.
    layers = model.method.discriminator.layers
    for index, layer in enumerate(layers):
        if isinstance(layer, nn.Dropout):
            layers[index] = nn.Identity()
    return model


def test_a_dann_fit_follows_the_hand_written_dann_update_step_for_step() -> None:
    """Lightning's fit with method `dann` takes the steps a loop written here from the paper
    takes: SGD on CE(source) + BCE(discriminator), the backbone receiving -w(p) times the
    domain loss's gradient, w(p) = 2 / (1 + exp(-10 p)) - 1 with p = step / steps. Each step
    is checked from the weights the fit had before it (float noise does not accumulate)."""
    import copy

    import pytorch_lightning as pl

    model = _without_dropout(tiny_dann_model())
    reference = copy.deepcopy(model)
    steps = 4
    batches = [combined_batch(torch.full((3,), UNLABELLED)) for _ in range(steps)]
    for index, batch in enumerate(batches):  # distinct batches
        batch["source"] = (batch["source"][0] + index, *batch["source"][1:])

    losses: list[float] = []
    states: list[dict] = []  # the weights before each step, and after the last

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            states.append(copy.deepcopy(pl_module.state_dict()))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            losses.append(outputs["loss"].item())

        def on_train_end(self, trainer, pl_module) -> None:
            states.append(copy.deepcopy(pl_module.state_dict()))

    trainer = quiet_trainer(max_epochs=1, callbacks=[Record()])
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    assert len(losses) == steps and len(states) == steps + 1

    reference.train()
    backbone, head = reference.backbone, reference.head
    discriminator = reference.method.discriminator
    network = [*backbone.parameters(), *head.parameters()]
    own = list(discriminator.parameters())
    for step, batch in enumerate(batches):
        reference.load_state_dict(states[step])
        source, labels, domains = batch["source"]
        target = batch["target"][0]
        features = backbone(torch.cat([source, target]))
        classification = F.cross_entropy(head(features[: len(source)], domains), labels)
        domain_labels = torch.cat([torch.zeros(len(source)), torch.ones(len(target))])
        domain = F.binary_cross_entropy_with_logits(
            discriminator(features).squeeze(-1), domain_labels
        )
        assert losses[step] == pytest.approx((classification + domain).item(), rel=1e-5)
        weight = 2.0 / (1.0 + math.exp(-10.0 * step / steps)) - 1.0
        grad_classification = torch.autograd.grad(classification, network, retain_graph=True)
        grad_domain = torch.autograd.grad(domain, network + own, allow_unused=True)
        with torch.no_grad():
            for parameter, g_c, g_d in zip(
                network, grad_classification, grad_domain[: len(network)], strict=True
            ):
                g_d = torch.zeros_like(parameter) if g_d is None else g_d
                parameter -= 0.1 * (g_c - weight * g_d)
            for parameter, g_d in zip(own, grad_domain[len(network) :], strict=True):
                parameter -= 0.1 * g_d
        # the step lands where the hand-written step puts it
        after = states[step + 1]
        for name, by_hand in reference.named_parameters():
            torch.testing.assert_close(after[name], by_hand, rtol=1e-4, atol=1e-6, msg=name)
