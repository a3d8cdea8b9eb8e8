"""CDANN (DomainBed's): three steps against DomainBed's conditional update written in
test_dann_dg.py (class embedding on the discriminator's input, class-balanced loss), the
balanced loss with a class missing from the batch, the embedding's optimizer, kill-and-resume,
and a tiny fit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.helpers.dann import check_against_domainbed
from tests.helpers.manual_methods import (
    fit,
    resumed_losses,
    synthetic_batches,
    tiny_fit,
    tiny_model,
)


@pytest.mark.parametrize(("k", "kinds"), [(1, "gdg"), (2, "dgd")])
def test_three_steps_equal_domainbeds_cdann_update(k: int, kinds: str) -> None:
    check_against_domainbed("cdann", k, kinds)


def test_the_balanced_loss_divides_by_the_class_count_and_the_largest_label_plus_one() -> None:
    method = tiny_model("cdann").method
    logits = torch.tensor([[0.3, -0.2], [1.0, 0.5], [0.1, 0.9], [-0.4, 0.2]])
    domains = torch.tensor([0, 1, 1, 0])
    labels = torch.tensor([0, 0, 1, 0])  # class 2 absent: K = 2, counts 3 and 1
    per_sample = F.cross_entropy(logits, domains, reduction="none")
    expected = (per_sample[[0, 1, 3]].sum() / 3 + per_sample[2]) / 2
    torch.testing.assert_close(method.discriminator_loss(logits, domains, labels), expected)


def test_the_class_embedding_is_added_and_trained_by_the_discriminators_adam() -> None:
    model = tiny_model("cdann", {"d_steps_per_g_step": 1, "lr_d": 1e-3})
    embedding = model.method.class_embeddings
    assert embedding.weight.shape == (model.num_classes, model.backbone.feature_dim)
    features, labels = torch.randn(4, model.backbone.feature_dim), torch.tensor([2, 0, 1, 2])
    torch.testing.assert_close(
        model.method.discriminator_input(features, labels), features + embedding.weight[labels]
    )
    before = embedding.weight.detach().clone()
    fit(model, synthetic_batches(2))  # a network step, then a discriminator step
    discriminator = model.trainer.optimizers[1]
    assert [g["name"] for g in discriminator.param_groups] == ["discriminator", "class_embeddings"]
    assert not torch.equal(before, embedding.weight)


def test_the_discriminator_embedding_and_counter_survive_kill_and_resume(tmp_path) -> None:
    whole, resumed = resumed_losses(tmp_path, "cdann", {"d_steps_per_g_step": 2, "lr_d": 1e-3})
    assert resumed == pytest.approx(whole, rel=1e-5, abs=1e-6)


def test_a_tiny_cdann_fit_learns() -> None:
    losses, accuracy, _ = tiny_fit("cdann", {"lr_d": 1e-3}, epochs=3)
    network_steps = losses[::2]
    assert sum(network_steps[-4:]) < sum(network_steps[:4]) - 1.0
    assert accuracy > 0.6  # chance: 1/3
