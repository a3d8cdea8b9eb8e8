"""DANN for domain generalisation (DomainBed's): three steps against DomainBed's update written
here (the MLP from its weights, the penalty with torch.autograd.grad, the alternation, two Adams
with betas (beta1, 0.9)), the optimizers, the counter through kill-and-resume, a tiny fit."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.dann import LR, SETTINGS, check_against_domainbed
from tests.helpers.manual_methods import (
    fit,
    resumed_losses,
    synthetic_batches,
    tiny_fit,
    tiny_model,
)


@pytest.mark.parametrize(("k", "kinds"), [(1, "gdg"), (2, "dgd")])
def test_three_steps_equal_domainbeds_dann_update(k: int, kinds: str) -> None:
    check_against_domainbed("dann_dg", k, kinds)


def test_the_optimizers_are_the_models_with_betas_and_an_adam_for_the_discriminator() -> None:
    model = tiny_model("dann_dg", SETTINGS)
    fit(model, synthetic_batches(1))
    network, discriminator = model.trainer.optimizers
    assert {id(p) for g in network.param_groups for p in g["params"]} == {
        id(p) for p in (*model.backbone.parameters(), *model.head.parameters())
    }
    assert all(g["betas"] == (0.0, 0.9) and g["lr"] == LR for g in network.param_groups)
    assert isinstance(discriminator, torch.optim.Adam)
    assert [p for g in discriminator.param_groups for p in g["params"]] == list(
        model.method.discriminator.parameters()
    )
    group = discriminator.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["betas"]) == (2e-3, 0.01, (0.0, 0.9))


def test_an_optimizer_without_betas_is_warned_about() -> None:
    model = tiny_model("dann_dg", optimizer=lambda params: torch.optim.SGD(params, lr=0.01))
    with pytest.warns(UserWarning, match=r"has no betas, so beta1=0.5 applies to the discrim"):
        fit(model, synthetic_batches(1))


def test_the_step_counter_and_both_optimizers_survive_kill_and_resume(tmp_path) -> None:
    # d_steps_per_g_step 2: epoch 1 is (d, g), epoch 2 (d, d) only if the counter is restored
    whole, resumed = resumed_losses(tmp_path, "dann_dg", {"d_steps_per_g_step": 2, "lr_d": 1e-3})
    assert resumed == pytest.approx(whole, rel=1e-5, abs=1e-6)


def test_a_tiny_dann_dg_fit_learns() -> None:
    losses, accuracy, _ = tiny_fit("dann_dg", {"lr_d": 1e-3}, epochs=3)
    network_steps = losses[::2]  # the network's steps come first, then alternate
    assert sum(network_steps[-4:]) < sum(network_steps[:4]) - 1.0
    assert accuracy > 0.6  # chance: 1/3


def test_a_batch_of_an_untrained_domain_is_refused() -> None:
    model = tiny_model("dann_dg")
    images, labels, domains = synthetic_batches(1)[0]
    with pytest.raises(ValueError, match=r"dann_dg: a training batch holds a domain without a"):
        fit(model, [(images, labels, domains + 1)])
