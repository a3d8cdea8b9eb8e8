"""MLDG: one outer step against first-order MLDG written here with explicit copies, Adam's first
step by hand and torch.autograd.grad; the split's pairs and divisor; a tiny fit that learns."""

from __future__ import annotations

import copy
from itertools import cycle
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from pytorch_lightning.plugins.precision import MixedPrecision

from lightning_modules.methods.manual_steps import check_manual_support
from tests.helpers.manual_methods import (
    fit,
    synthetic_batches,
    tiny_fit,
    tiny_model,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers", "ignore:The number of training batches"
)


# A larger eps than Adam's 1e-8: g / (|g| + eps) would turn float rounding of gradients near
# 1e-8 into visible differences.
LR, EPS = 1e-3, 1e-4


def adam(params) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=LR, eps=EPS)


def adam_first_step(parameter: torch.Tensor, gradient: torch.Tensor | None, lr: float) -> None:
    """A fresh Adam's first step, from its formula: m = (1 - b1) g, v = (1 - b2) g^2, the bias
    corrections cancel them: p -= lr g / (|g| + eps)."""
    if gradient is not None:
        parameter -= lr * gradient / (gradient.abs() + EPS)


def uneven_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """12 images of 3 domains (5, 3 and 4 of them), shuffled: pairs are cut to the shorter."""
    generator = torch.Generator().manual_seed(3)
    domains = torch.tensor([0, 2, 1, 0, 0, 2, 1, 0, 2, 1, 0, 2])
    images = torch.randn(12, 3, 16, 16, generator=generator)
    labels = torch.randint(0, 3, (12,), generator=generator)
    return images, labels, domains


def network_parameters(model) -> list[torch.Tensor]:
    return [p for p in (*model.backbone.parameters(), *model.head.parameters())]


def learning_rates(model, multiplier: float) -> list[float]:
    """Each network parameter's learning rate: the backbone's times its multiplier."""
    backbone = len(list(model.backbone.parameters()))
    heads = len(list(model.head.parameters()))
    return [LR * multiplier] * backbone + [LR] * heads


def loss_of(model, images, labels, domains, shared: bool) -> torch.Tensor:
    features = model.backbone(images)
    loss = F.cross_entropy(model.head(features, domains), labels)
    if shared:
        loss = loss + F.cross_entropy(model.head.shared(features), labels)
    return loss


@pytest.mark.parametrize(
    ("n_meta_test", "shared_head"),
    [(2, False), (1, False), (1, True)],
    ids=["1pair", "2pairs", "shared_head_backbone_lr_half"],
)
def test_one_step_equals_first_order_mldg_by_hand(n_meta_test: int, shared_head: bool) -> None:
    """The inner step is a fresh Adam at the outer optimizer's learning rate of each group (the
    backbone's multiplier included), the outer step Adam's first on (G_i + beta G_j) / D."""
    multiplier = 0.5 if shared_head else 1.0
    beta = 0.7
    model = tiny_model(
        "mldg",
        {"n_meta_test": n_meta_test, "mldg_beta": beta},
        domains=3,
        shared_head=shared_head,
        optimizer=adam,
        backbone_lr_multiplier=multiplier,
    )
    reference = copy.deepcopy(model)
    orders = []
    shuffle = model.method.shuffle_domains
    model.method.shuffle_domains = lambda count: orders.append(shuffle(count)) or orders[-1]
    images, labels, domains = uneven_batch()
    losses = fit(model, [(images, labels, domains)])
    assert model.trainer.global_step == 1

    # first-order MLDG by hand, on the copy taken before training
    reference.train()
    rows = [torch.nonzero(domains == d).squeeze(1) for d in range(3)]
    order = orders[0]
    meta_train, meta_test = order[: 3 - n_meta_test], order[-n_meta_test:]
    pairs = list(zip(meta_train, cycle(meta_test)))
    assert len(pairs) == 3 - n_meta_test
    parameters = network_parameters(reference)
    rates = learning_rates(reference, multiplier)
    total = [torch.zeros_like(p) for p in parameters]
    objective = 0.0
    for i, j in pairs:
        size = min(len(rows[i]), len(rows[j]))
        rows_i, rows_j = rows[i][:size], rows[j][:size]
        loss_i = loss_of(reference, images[rows_i], labels[rows_i], domains[rows_i], shared_head)
        grads_i = torch.autograd.grad(loss_i, parameters, allow_unused=True)
        inner = copy.deepcopy(reference)
        inner_parameters = network_parameters(inner)
        with torch.no_grad():
            for parameter, gradient, lr in zip(inner_parameters, grads_i, rates, strict=True):
                adam_first_step(parameter, gradient, lr)
        loss_j = loss_of(inner, images[rows_j], labels[rows_j], domains[rows_j], shared_head)
        grads_j = torch.autograd.grad(loss_j, inner_parameters, allow_unused=True)
        for t, g_i, g_j in zip(total, grads_i, grads_j, strict=True):
            t += (0 if g_i is None else g_i) / 3 + beta * (0 if g_j is None else g_j) / 3
        objective += (loss_i.item() + beta * loss_j.item()) / 3  # divided by D = 3 domains
    with torch.no_grad():
        for parameter, gradient, lr in zip(parameters, total, rates, strict=True):
            adam_first_step(parameter, gradient, lr)
    assert losses == [pytest.approx(objective, rel=1e-5)]
    for trained, by_hand in zip(
        model.state_dict().values(), reference.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(trained, by_hand, rtol=1e-4, atol=1e-6)
    # the step moved the network: the parameters differ from the start
    start = tiny_model("mldg", domains=3, shared_head=shared_head)
    assert not torch.equal(start.backbone.conv1.weight, model.backbone.conv1.weight)


def test_the_pairs_cut_each_domain_to_the_shorter_and_the_split_follows_the_shuffle() -> None:
    method = tiny_model("mldg", {"n_meta_test": 1}, domains=3).method
    method.shuffle_domains = lambda count: [2, 0, 1]  # meta-train 2 and 0, meta-test 1
    images, labels, domains = uneven_batch()
    from lightning_modules.methods import TrainingBatch

    pairs = method.pairs(TrainingBatch(images, labels, domains))
    assert [(domains[i].unique().tolist(), domains[j].unique().tolist()) for i, j in pairs] == [
        ([2], [1]),
        ([0], [1]),
    ]
    assert [(len(i), len(j)) for i, j in pairs] == [(3, 3), (3, 3)]  # 4 and 5 images cut to 3


def test_as_many_meta_test_domains_as_domains_is_refused() -> None:
    model = tiny_model("mldg", domains=2)  # n_meta_test 2 of 2 domains: no pair
    with pytest.raises(ValueError, match=r"n_meta_test=2 \(got 2\).*method_kwargs.n_meta_test"):
        fit(
            model,
            [(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1] * 2))],
        )


def test_a_tiny_mldg_fit_learns() -> None:
    losses, accuracy, _ = tiny_fit("mldg", {"n_meta_test": 1}, epochs=3)
    assert sum(losses[-8:]) < 0.5 * sum(losses[:8])
    assert accuracy > 0.6  # chance: 1/3


def test_float16_amp_with_a_gradient_scaler_is_refused() -> None:
    # On the CPU Lightning maps precision 16-mixed to bf16; a scaler is given explicitly.
    scaled = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    with pytest.raises(ValueError, match=r"mldg computes its gradients with torch.autograd.grad"):
        fit(tiny_model("mldg", {"n_meta_test": 1}), synthetic_batches(1), plugins=[scaled])


def test_several_processes_are_refused() -> None:
    trainer = SimpleNamespace(world_size=2, precision_plugin=None)
    with pytest.raises(ValueError, match=r"train it in one process \(trainer.devices: 1"):
        check_manual_support(SimpleNamespace(trainer=trainer), "mldg")
