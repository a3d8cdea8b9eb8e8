"""EFDMix as a training method: the layer against the paper's sort-and-place written here with
numpy's argsort, its value lam x + (1 - lam) y_hat and identity-plus gradient, when it acts,
where it sits, crossdomain partners after the method orders the batch, and a tiny fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_modules.methods import EFDMix, TrainingBatch
from lightning_modules.methods.efdmix import EFDMixLayer
from tests.helpers.style_methods import (
    check_placement,
    record_draws,
    tiny_fit,
    tiny_model,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:You are trying to `self.log()`", "ignore:You defined a `validation_step`"
)


def feature_maps(seed: int = 0, shape=(4, 3, 3, 5)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator)


def rank_positions(values: np.ndarray) -> np.ndarray:
    """rank of each position in its row (0: the smallest)."""
    ranks = np.empty(len(values), dtype=int)
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks


def paper_efdmix(x: np.ndarray, lam: np.ndarray, partners: np.ndarray) -> np.ndarray:
    """lam x + (1 - lam) y_hat, y_hat the partner's sorted values at x's ranks."""
    batch, channels = x.shape[:2]
    out = np.empty_like(x)
    for b in range(batch):
        for c in range(channels):
            own = x[b, c].ravel()
            partner_sorted = np.sort(x[partners[b], c].ravel())
            y_hat = partner_sorted[rank_positions(own)]
            out[b, c] = (lam[b] * own + (1 - lam[b]) * y_hat).reshape(x.shape[2:])
    return out


def active_layer(mix: str = "random") -> tuple[EFDMixLayer, list]:
    layer = EFDMixLayer(stage=1, p=1.0, alpha=0.1, mix=mix)
    layer.train()
    return layer, record_draws(layer)


@pytest.mark.parametrize("mix", ["random", "crossdomain"])
def test_the_layer_places_the_partners_sorted_values_at_its_own_ranks(mix: str) -> None:
    x = feature_maps()
    layer, draws = active_layer(mix)
    torch.manual_seed(0)
    out = layer(x)
    ((lam, partners),) = draws
    assert lam.shape == (4,) and sorted(partners.tolist()) == [0, 1, 2, 3]
    expected = paper_efdmix(x.double().numpy(), lam.double().numpy(), partners.numpy())
    torch.testing.assert_close(out, torch.from_numpy(expected).float(), rtol=1e-5, atol=1e-5)
    # at lam = 0 a row becomes exactly its partner's values, in its own order
    exact = EFDMixLayer(stage=1, p=1.0)
    exact.train()
    exact.draw = lambda batch_size: (torch.zeros(batch_size), torch.tensor([1, 2, 3, 0]))
    matched = exact(x)
    for b, partner in enumerate([1, 2, 3, 0]):
        for c in range(3):
            own, new = x[b, c].flatten(), matched[b, c].flatten()
            # (x + (y_hat - x) is y_hat up to rounding)
            torch.testing.assert_close(new.sort().values, x[partner, c].flatten().sort().values)
            assert torch.equal(new.argsort(), own.argsort())


def test_the_gradient_is_the_identity_plus_one_minus_lambda_into_the_partner() -> None:
    x = feature_maps().requires_grad_()
    weights = feature_maps(seed=1)
    layer, draws = active_layer()
    (layer(x) * weights).sum().backward()
    ((lam, partners),) = draws
    values, w = x.detach().numpy(), weights.numpy()
    expected = w.astype(np.float64).copy()  # identity with respect to x itself
    for j in range(4):  # sample j's y_hat takes its values from sample partners[j]
        i = int(partners[j])
        for c in range(3):
            ranks_j = rank_positions(values[j, c].ravel())
            by_rank_i = np.argsort(values[i, c].ravel(), kind="stable")  # rank -> position in i
            grad_i = expected[i, c].reshape(-1)
            for position_j, rank in enumerate(ranks_j):
                grad_i[by_rank_i[rank]] += (1 - lam[j].item()) * w[j, c].ravel()[position_j]
    torch.testing.assert_close(x.grad, torch.from_numpy(expected).float(), rtol=1e-5, atol=1e-5)


def test_identity_in_evaluation_and_when_the_coin_says_no_active_in_training() -> None:
    x = feature_maps()
    layer = EFDMixLayer(stage=1, p=1.0)
    layer.eval()
    assert layer(x) is x
    never = EFDMixLayer(stage=1, p=0.0)
    never.train()
    assert all(never(x) is x for _ in range(20))
    layer.train()
    assert not torch.allclose(layer(x), x)


def test_a_seeded_run_repeats() -> None:
    x = feature_maps()
    layer = EFDMixLayer(stage=1, p=0.5)
    layer.train()
    torch.manual_seed(7)
    first = [layer(x) for _ in range(10)]
    torch.manual_seed(7)
    assert all(torch.equal(a, layer(x)) for a in first)


def test_bfloat16_and_channels_last_maps_keep_their_dtype_and_layout() -> None:
    x = feature_maps().bfloat16().contiguous(memory_format=torch.channels_last)
    layer, draws = active_layer()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=torch.channels_last)
    ((lam, partners),) = draws
    expected = paper_efdmix(x.double().numpy(), lam.double().numpy(), partners.numpy())
    torch.testing.assert_close(out.double(), torch.from_numpy(expected), rtol=1e-2, atol=2e-2)


def test_the_method_orders_the_batch_by_domain_so_crossdomain_partners_differ_in_domain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_model("efdmix", {"mix": "crossdomain", "p": 1.0, "stages": [2]})
    model.train()
    draws = record_draws(model.method.stage_layers()[2])
    generator = torch.Generator().manual_seed(5)
    images = torch.randn(6, 3, 16, 16, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    domains = torch.tensor([1, 1, 0, 1, 0, 0])
    seen = []
    features = model.features
    monkeypatch.setattr(model, "features", lambda x: seen.append(x) or features(x))
    output = model.method.training_loss(model, TrainingBatch(images, labels, domains))
    ((_, partners),) = draws
    order = [2, 4, 5, 0, 1, 3]  # domain 0 first, each domain in its original order
    assert torch.equal(seen[0], images[order])
    assert torch.equal(output.labels, labels[order])
    seen_domains = domains[order]
    assert bool((seen_domains[partners] != seen_domains).all())


def test_placement_after_the_asked_stages_in_resnets_and_densenets() -> None:
    check_placement("efdmix", None, "resnet18", 64, (1, 2, 3))
    check_placement("efdmix", None, "densenet_bc_100", 16, (1, 2))
    check_placement("efdmix", {"stages": [1, 2]}, "densenet121", 64, (1, 2))
    check_placement("efdmix", {"stages": [3]}, "resnet20", 16, (3,))


def test_a_stage_outside_the_backbone_and_bad_options_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match=r"stages=\[4\]: stage 4 does not exist in this 3-stage"):
        tiny_model("efdmix", {"stages": [4]}, backbone="densenet_bc_100")
    with pytest.raises(ValueError, match=r"method_kwargs.alpha=0 must be > 0"):
        EFDMix(alpha=0)
    with pytest.raises(ValueError, match=r"has no option 'eps'"):
        tiny_model("efdmix", {"eps": 1e-6})


def test_a_tiny_fit_learns() -> None:
    losses, accuracy, fired = tiny_fit("efdmix")
    assert fired > 0
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])
    assert accuracy > 0.6  # chance: 1/3
