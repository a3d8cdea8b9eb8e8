"""RSC (DomainBed's): the masks and the loss against the paper's equations written with the
linear head's analytic gradient and numpy's percentiles, and a tiny fit that learns."""

from __future__ import annotations

import numpy as np
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


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def independent_rsc(model, batch, feature_drop: float, batch_drop: float):
    """(loss, mask, muted samples): one pass over the batch; the gradient of the true-class
    logit of a linear head with respect to the features is that class's weight row."""
    features = model.features(batch.images)
    heads = list(model.head.heads.values())
    labels = batch.labels.numpy()
    gradient = np.stack(
        [
            heads[d].weight[y].detach().double().numpy()
            for d, y in zip(batch.domains.tolist(), labels, strict=True)
        ]
    )
    mask_f = gradient < np.percentile(gradient, 100 * (1 - feature_drop), axis=1)[:, None]
    with torch.no_grad():
        logits = own_head_logits(model, features, batch.domains).double().numpy()
        muted = own_head_logits(model, features * torch.from_numpy(mask_f).float(), batch.domains)
    rows = np.arange(len(labels))
    changes = softmax(logits)[rows, labels] - softmax(muted.double().numpy())[rows, labels]
    keep_all = changes < np.percentile(changes, 100 * (1 - batch_drop))
    mask = torch.from_numpy(mask_f | keep_all[:, None]).float()
    masked_features = features * mask
    loss = F.cross_entropy(own_head_logits(model, masked_features, batch.domains), batch.labels)
    if model.head.shared is not None:
        loss = loss + F.cross_entropy(model.head.shared(masked_features), batch.labels)
    return loss, mask, ~keep_all


@pytest.mark.parametrize("shared_head", [False, True])
def test_rsc_loss_mutes_the_top_gradient_features_of_the_most_challenged_samples(
    shared_head: bool,
) -> None:
    feature_drop, batch_drop = 0.25, 0.4
    model = tiny_model(
        "rsc",
        {"rsc_f_drop_factor": feature_drop, "rsc_b_drop_factor": batch_drop},
        shared_head=shared_head,
    )
    model.train()
    batch = separable_batch(10, sizes=(5, 5, 5))
    output = model.method.training_loss(model, batch)
    expected, mask, muted = independent_rsc(model, batch, feature_drop, batch_drop)
    torch.testing.assert_close(output.loss, expected)
    torch.testing.assert_close(output.metrics["kept_fraction"], mask.mean())
    # the muted samples lose about a quarter of their features, the others none
    assert muted.sum() == 6  # above the 60th percentile of 15 confidence drops
    dropped = 1 - mask[torch.from_numpy(muted)].mean(dim=1)
    assert bool(((dropped > 0.2) & (dropped < 0.3)).all())
    # the masks are constants: the gradient is that of CE(h(z * mask)) with a fixed mask
    assert_same_gradients(backbone_gradient(output.loss, model), backbone_gradient(expected, model))


def test_rsc_learns_a_tiny_separable_task() -> None:
    assert_learns("rsc")
