"""MTL (the paper's, DomainBed's without its noise): heads twice as wide, the training loss and
the running domain embeddings against the update written per domain, evaluation with the test
batch's own mean, kill-and-resume of the embeddings, and a tiny fit that learns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.helpers.domainbed_fits import (
    adam,
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
def test_every_head_reads_features_and_domain_embedding_and_is_optimised(
    shared_head: bool,
) -> None:
    model = tiny_model("mtl", shared_head=shared_head)
    width = model.backbone.feature_dim
    heads = [*model.head.heads.values(), *([model.head.shared] if shared_head else [])]
    assert len(heads) == 3 + shared_head
    assert all(head.in_features == 2 * width for head in heads)
    assert model.method.embeddings.shape == (3, width)
    optimised = {id(p) for group in model.parameter_groups() for p in group["params"]}
    assert {id(p) for p in model.head.parameters()} <= optimised


@pytest.mark.parametrize("shared_head", [False, True])
def test_mtl_loss_sums_domain_losses_with_running_embeddings(shared_head: bool) -> None:
    ema = 0.6
    model = tiny_model("mtl", {"mtl_ema": ema}, shared_head=shared_head)
    model.train()
    stored = torch.zeros(3, model.backbone.feature_dim)
    for seed in (13, 14):  # the second step mixes in the first one's embeddings
        batch = separable_batch(seed, sizes=(4, 3, 5))
        output = model.method.training_loss(model, batch)
        expected = 0.0
        for domain, rows in rows_of(batch).items():
            rows = torch.tensor(rows)
            features = model.features(batch.images[rows])  # one pass per domain
            embedding = ema * features.mean(0) + (1 - ema) * stored[domain]
            inputs = torch.cat([features, embedding.expand_as(features)], dim=1)
            labels = batch.labels[rows]
            expected = expected + F.cross_entropy(
                own_head_logits(model, inputs, batch.domains[rows]), labels
            )
            if shared_head:
                expected = expected + F.cross_entropy(model.head.shared(inputs), labels)
            stored[domain] = embedding.detach()
        torch.testing.assert_close(output.loss, expected)  # a sum over domains, not a mean
        torch.testing.assert_close(model.method.embeddings, stored)
        assert_same_gradients(
            backbone_gradient(output.loss, model), backbone_gradient(expected, model)
        )


def test_evaluation_embeds_each_domain_by_its_mean_in_the_batch_without_noise() -> None:
    model = tiny_model("mtl")
    model.method.embeddings.normal_()  # the running embeddings play no part in evaluation
    before = model.method.embeddings.clone()
    model.eval()
    batch = separable_batch(15, sizes=(3, 4, 2))
    with torch.no_grad():
        logits = model(batch.images, batch.domains)
        features = model.features(batch.images)
        embeddings = torch.stack(
            [features[batch.domains == domain].mean(0) for domain in batch.domains.tolist()]
        )
        expected = own_head_logits(model, torch.cat([features, embeddings], 1), batch.domains)
        torch.testing.assert_close(logits, expected)
        # the paper's embedding, not DomainBed's in-place N(0, 1) noise: deterministic
        torch.testing.assert_close(model(batch.images, batch.domains), logits)
    torch.testing.assert_close(model.method.embeddings, before)


def test_mtl_keeps_its_embeddings_across_kill_and_resume(tmp_path) -> None:
    whole, _ = assert_resume_is_seamless(
        tmp_path, "mtl", {"mtl_ema": 0.5}, state=lambda model: model.method.embeddings
    )
    assert whole.method.embeddings.abs().sum() > 0
    assert "method.embeddings" in whole.state_dict()


def test_mtl_learns_a_tiny_separable_task() -> None:
    # DomainBed's optimizer: the summed domain losses make momentum SGD at this rate jumpy
    assert_learns("mtl", optimizer=adam)
