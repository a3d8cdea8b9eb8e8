"""DSU as a training method: the layer against the paper's formula written here (explicit
per-(sample, channel) statistics, the batch's unbiased spread of them, eps 1e-6), its gradient
through every statistic, when it acts, where it sits, and a tiny fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_modules.methods import DSU
from lightning_modules.methods.dsu import DSULayer
from tests.helpers.style_methods import (
    check_placement,
    record_draws,
    tiny_fit,
    tiny_model,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:You are trying to `self.log()`", "ignore:You defined a `validation_step`"
)
EPS = 1e-6


def feature_maps(seed: int = 0, shape=(5, 3, 4, 6)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator) * 1.5 - 0.5


def paper_dsu(x: np.ndarray, noise_mu: np.ndarray, noise_sigma: np.ndarray) -> np.ndarray:
    batch, channels = x.shape[:2]
    mu = np.array([[x[b, c].mean() for c in range(channels)] for b in range(batch)])
    sigma = np.array(
        [[np.sqrt(x[b, c].var(ddof=1) + EPS) for c in range(channels)] for b in range(batch)]
    )
    spread_mu = np.sqrt(mu.var(axis=0, ddof=1) + EPS)  # per channel, over the batch
    spread_sigma = np.sqrt(sigma.var(axis=0, ddof=1) + EPS)
    out = np.empty_like(x)
    for b in range(batch):
        for c in range(channels):
            beta = mu[b, c] + noise_mu[b, c] * spread_mu[c]
            gamma = sigma[b, c] + noise_sigma[b, c] * spread_sigma[c]
            out[b, c] = (x[b, c] - mu[b, c]) / sigma[b, c] * gamma + beta
    return out


def active_layer() -> tuple[DSULayer, list]:
    layer = DSULayer(stage=1, p=1.0, eps=EPS)
    layer.train()
    return layer, record_draws(layer)


def test_the_layer_is_the_papers_formula_with_its_own_noise() -> None:
    x = feature_maps()
    layer, draws = active_layer()
    torch.manual_seed(0)
    out = layer(x)
    ((noise_mu, noise_sigma),) = draws
    assert noise_mu.shape == noise_sigma.shape == (5, 3)  # one draw per (sample, channel)
    assert not torch.equal(noise_mu, noise_sigma)
    expected = paper_dsu(*(t.double().numpy() for t in (x, noise_mu, noise_sigma)))
    torch.testing.assert_close(out, torch.from_numpy(expected).float(), rtol=1e-5, atol=1e-5)


def test_nothing_is_detached_the_gradient_flows_through_every_statistic() -> None:
    x = feature_maps().requires_grad_()
    weights = feature_maps(seed=1)
    layer, draws = active_layer()
    (layer(x) * weights).sum().backward()
    ((noise_mu, noise_sigma),) = draws

    # the same formula in float64 with hand-written sums, differentiated by autograd
    x64 = x.detach().double().requires_grad_()
    n = x64.shape[2] * x64.shape[3]
    rows = x64.flatten(2)
    mu = rows.sum(2) / n
    sigma = (((rows - mu[..., None]) ** 2).sum(2) / (n - 1) + EPS).sqrt()
    spread_mu = (((mu - mu.mean(0)) ** 2).sum(0) / (len(mu) - 1) + EPS).sqrt()
    spread_sigma = (((sigma - sigma.mean(0)) ** 2).sum(0) / (len(sigma) - 1) + EPS).sqrt()
    beta = mu + noise_mu.double() * spread_mu
    gamma = sigma + noise_sigma.double() * spread_sigma
    out = (rows - mu[..., None]) / sigma[..., None] * gamma[..., None] + beta[..., None]
    (out.view_as(x64) * weights.double()).sum().backward()
    torch.testing.assert_close(x.grad, x64.grad.float(), rtol=1e-4, atol=1e-5)

    # which differs from what detached statistics would give (weights * gamma / sigma)
    detached = weights * (gamma / sigma).detach().float()[..., None, None]
    assert (x.grad - detached).abs().max() > 1e-2


def test_identity_in_evaluation_and_when_the_coin_says_no_active_in_training() -> None:
    x = feature_maps()
    layer = DSULayer(stage=1, p=1.0)
    layer.eval()
    assert layer(x) is x
    never = DSULayer(stage=1, p=0.0)
    never.train()
    assert all(never(x) is x for _ in range(20))
    layer.train()
    assert not torch.allclose(layer(x), x)
    single = x[:1]
    assert layer(single) is single  # one sample: no batch variance


def test_a_seeded_run_repeats_and_the_coin_fires_about_p_of_the_time() -> None:
    x = feature_maps()
    layer = DSULayer(stage=1, p=0.5)
    layer.train()
    torch.manual_seed(4)
    first = [layer(x) for _ in range(40)]
    torch.manual_seed(4)
    assert all(torch.equal(a, layer(x)) for a in first)
    fired = sum(not torch.equal(out, x) for out in first)
    assert 8 <= fired <= 32


def test_maps_without_spatial_statistics_are_refused_clearly() -> None:
    layer = DSULayer(stage=4, p=1.0)
    layer.train()
    with pytest.raises(ValueError, match=r"DSULayer after stage 4 gets 1x1 maps.*stages"):
        layer(torch.randn(4, 8, 1, 1))


def test_bfloat16_maps_under_autocast_keep_their_dtype() -> None:
    x = feature_maps().bfloat16()
    layer, draws = active_layer()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    ((noise_mu, noise_sigma),) = draws
    expected = paper_dsu(*(t.double().numpy() for t in (x, noise_mu, noise_sigma)))
    torch.testing.assert_close(out.double(), torch.from_numpy(expected), rtol=1e-2, atol=3e-2)


def test_placement_after_every_stage_by_default_or_the_asked_ones() -> None:
    # the official positions this project offers: after the stem and after every stage
    check_placement("dsu", None, "resnet18", 64, (0, 1, 2, 3, 4))
    check_placement("dsu", None, "resnet20", 16, (0, 1, 2, 3))
    check_placement("dsu", None, "densenet_bc_100", 16, (0, 1, 2, 3))
    check_placement("dsu", {"stages": [1, 3]}, "densenet121", 64, (1, 3))


def test_a_stage_outside_the_backbone_and_bad_options_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match=r"stages=\[5\]: stage 5 does not exist in this 4-stage"):
        tiny_model("dsu", {"stages": [5]}, backbone="resnet18", image_size=64)
    with pytest.raises(ValueError, match=r"method_kwargs.eps=0 must be > 0"):
        DSU(eps=0)


def test_a_tiny_fit_learns() -> None:
    losses, accuracy, fired = tiny_fit("dsu")
    assert fired > 0
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])
    assert accuracy > 0.6  # chance: 1/3
