"""MixStyle as a training method: the layer against the paper's formula written here with
explicit per-(sample, channel) statistics, its detached statistics, when it acts, where it
sits, crossdomain partners after the method orders the batch by domain, and a tiny fit."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lightning_modules.methods import MixStyle, TrainingBatch
from lightning_modules.methods.mixstyle import MixStyleLayer
from lightning_modules.methods.style_statistics import partner_permutation
from tests.helpers.style_methods import (
    check_placement,
    record_draws,
    tiny_fit,
    tiny_model,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:You are trying to `self.log()`", "ignore:You defined a `validation_step`"
)


def feature_maps(seed: int = 0, shape=(4, 3, 5, 6)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator) * 2 + 1


def paper_mixstyle(x: np.ndarray, lam: np.ndarray, partners: np.ndarray, eps: float):
    """The output and, for an upstream gradient of ones times `weights`, nothing else: each
    (sample, channel) map normalised by its own spatial mean and unbiased std, re-styled with
    the lambda-mix of its own and its partner's."""
    out = np.empty_like(x)
    batch, channels = x.shape[:2]
    for b in range(batch):
        for c in range(channels):
            own, other = x[b, c], x[partners[b], c]
            mu, sigma = own.mean(), np.sqrt(own.var(ddof=1) + eps)
            mu2, sigma2 = other.mean(), np.sqrt(other.var(ddof=1) + eps)
            mixed_sigma = lam[b] * sigma + (1 - lam[b]) * sigma2
            mixed_mu = lam[b] * mu + (1 - lam[b]) * mu2
            out[b, c] = (own - mu) / sigma * mixed_sigma + mixed_mu
    return out


def active_layer(**kwargs) -> tuple[MixStyleLayer, list]:
    layer = MixStyleLayer(stage=1, p=1.0, **kwargs)
    layer.train()
    return layer, record_draws(layer)


@pytest.mark.parametrize("mix", ["random", "crossdomain"])
def test_the_layer_is_the_papers_formula_with_its_own_lambda_and_partners(mix: str) -> None:
    x = feature_maps()
    layer, draws = active_layer(alpha=0.3, eps=1e-6, mix=mix)
    torch.manual_seed(0)
    out = layer(x)
    ((lam, partners),) = draws
    assert lam.shape == (4,) and bool(((lam >= 0) & (lam <= 1)).all())
    assert sorted(partners.tolist()) == [0, 1, 2, 3]  # a permutation of the batch
    expected = paper_mixstyle(x.double().numpy(), lam.double().numpy(), partners.numpy(), 1e-6)
    torch.testing.assert_close(out, torch.from_numpy(expected).float(), rtol=1e-5, atol=1e-5)
    # each sample's mean is the lambda-mix of its own and its partner's
    own, other = x.mean((2, 3)), x[partners].mean((2, 3))
    torch.testing.assert_close(
        out.mean((2, 3)), lam[:, None] * own + (1 - lam[:, None]) * other, rtol=1e-5, atol=1e-5
    )


def test_the_statistics_are_detached_so_the_gradient_is_the_constant_style_formulas() -> None:
    x = feature_maps().requires_grad_()
    weights = feature_maps(seed=1)
    layer, draws = active_layer()
    (layer(x) * weights).sum().backward()
    ((lam, partners),) = draws
    # with mu and sigma constant the output is x * mixed_sigma / sigma + const per (b, c)
    values = x.detach().double().numpy()
    expected = np.empty_like(values)
    for b in range(4):
        for c in range(3):
            sigma = np.sqrt(values[b, c].var(ddof=1) + 1e-6)
            sigma2 = np.sqrt(values[partners[b], c].var(ddof=1) + 1e-6)
            mixed = lam[b].item() * sigma + (1 - lam[b].item()) * sigma2
            expected[b, c] = weights[b, c].double().numpy() * mixed / sigma
    torch.testing.assert_close(x.grad, torch.from_numpy(expected).float(), rtol=1e-5, atol=1e-5)


def test_identity_in_evaluation_and_when_the_coin_says_no_active_in_training() -> None:
    x = feature_maps()
    layer = MixStyleLayer(stage=1, p=1.0)
    layer.eval()
    assert layer(x) is x
    never = MixStyleLayer(stage=1, p=0.0)
    never.train()
    assert all(never(x) is x for _ in range(20))
    layer.train()
    assert not torch.allclose(layer(x), x)
    single = x[:1]
    assert layer(single) is single  # one sample: no partner


def test_the_coin_lambda_and_partners_come_from_torchs_seed_not_pythons_random() -> None:
    x = feature_maps()
    layer = MixStyleLayer(stage=1, p=0.5)
    layer.train()

    def run(torch_seed: int, python_seed: int) -> list[torch.Tensor]:
        torch.manual_seed(torch_seed)
        random.seed(python_seed)
        return [layer(x) for _ in range(8)]

    first, repeat, other = run(1, 1), run(1, 2), run(2, 1)
    assert all(torch.equal(a, b) for a, b in zip(first, repeat, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    fired = [not torch.equal(out, x) for out in first]
    assert any(fired) and not all(fired)  # p=0.5: a coin per call, for the whole batch


def test_bfloat16_maps_under_autocast_get_float32_statistics_and_keep_their_dtype() -> None:
    x = feature_maps().bfloat16()
    layer, draws = active_layer()
    seen = []
    perturb = layer.perturb
    layer.perturb = lambda maps: (
        seen.append((maps.dtype, torch.is_autocast_enabled("cpu"))) or (perturb(maps))
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16 and seen == [(torch.float32, False)]
    ((lam, partners),) = draws
    expected = paper_mixstyle(x.double().numpy(), lam.double().numpy(), partners.numpy(), 1e-6)
    torch.testing.assert_close(out.double(), torch.from_numpy(expected), rtol=1e-2, atol=2e-2)


@pytest.mark.parametrize("batch_size", [2, 5, 8, 9])
def test_crossdomain_partners_of_each_half_come_from_the_other_half(batch_size: int) -> None:
    torch.manual_seed(0)
    half = batch_size // 2
    for _ in range(5):
        partners = partner_permutation(batch_size, "crossdomain")
        assert len(partners) == batch_size
        assert bool((partners[:half] >= half).all()) and bool((partners[half:] < half).all())
        assert len(set(partners[:half].tolist())) == half  # distinct partners
        assert sorted(partners[half : 2 * half].tolist()) == list(range(half))


def test_the_method_orders_the_batch_by_domain_so_crossdomain_partners_differ_in_domain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_model("mixstyle", {"mix": "crossdomain", "p": 1.0, "stages": [1]})
    model.train()
    layer = model.method.stage_layers()[1]
    draws = record_draws(layer)
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(8, 3, 16, 16, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    domains = torch.tensor([1, 0, 1, 0, 0, 1, 1, 0])
    seen = []
    features = model.features
    monkeypatch.setattr(model, "features", lambda x: seen.append(x) or features(x))
    output = model.method.training_loss(model, TrainingBatch(images, labels, domains))
    ((_, partners),) = draws
    rows = [next(i for i in range(8) if torch.equal(image, images[i])) for image in seen[0]]
    seen_domains = domains[rows]
    assert seen_domains.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert rows == [1, 3, 4, 7, 0, 2, 5, 6]  # stable: each domain keeps its order
    assert bool((seen_domains[partners] != seen_domains).all())
    assert torch.equal(output.labels, labels[rows])  # the logits' labels, in the same order


def test_placement_after_the_asked_stages_in_resnets_and_densenets() -> None:
    # the defaults: stages 1-3, never the last stage (CIFAR layouts have 3 stages)
    check_placement("mixstyle", None, "resnet18", 64, (1, 2, 3))
    check_placement("mixstyle", None, "resnet20", 16, (1, 2))
    check_placement("mixstyle", None, "densenet_bc_100", 16, (1, 2))
    # the last stage only when asked
    check_placement("mixstyle", {"stages": [2, 3]}, "resnet20", 16, (2, 3))
    check_placement("mixstyle", {"stages": [0, 4]}, "densenet121", 64, (0, 4))


def test_a_stage_outside_the_backbone_and_bad_options_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match=r"stages=\[1, 4\]: stage 4 does not exist in this 3-st"):
        tiny_model("mixstyle", {"stages": [1, 4]})
    with pytest.raises(ValueError, match=r"mix='domains'; valid choices: random, crossdomain"):
        MixStyle(mix="domains")
    with pytest.raises(ValueError, match=r"method_kwargs.p=1.5 must be a probability"):
        MixStyle(p=1.5)
    with pytest.raises(ValueError, match=r"stages=\[\] must be distinct stage numbers"):
        MixStyle(stages=[])


def test_a_tiny_fit_learns() -> None:
    losses, accuracy, fired = tiny_fit("mixstyle")
    assert fired > 0
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])
    assert accuracy > 0.6  # chance: 1/3
