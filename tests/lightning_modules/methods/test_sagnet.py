"""SagNet (DomainBed's): two batches against DomainBed's update written here (its three Adams,
the randomisations from their formulas with the method's recorded draws), which parameters
each of the three steps moves, the randomisations' gradients, kill-and-resume, a tiny fit."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from pytorch_lightning.plugins.precision import MixedPrecision

import lightning_modules.methods.sagnet as sagnet_module
from lightning_modules.methods.sagnet import randomize
from tests.helpers.manual_methods import (
    KeepStates,
    fit,
    resumed_losses,
    synthetic_batches,
    tiny_fit,
    tiny_model,
)

# Adam with a larger eps than 1e-8: g / (|g| + eps) would turn float rounding of gradients near
# 1e-8 into visible differences.
LR, EPS, W_ADV = 1e-3, 1e-4, 0.3


def adam(params) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=LR, eps=EPS)


def randomize_by_hand(z: torch.Tensor, what: str, alpha: torch.Tensor, perm: torch.Tensor):
    """DomainBed's randomize of (B, F) vectors, statistics over F with n - 1 in the variance."""
    mean = z.sum(1, keepdim=True) / z.shape[1]
    var = ((z - mean) ** 2).sum(1, keepdim=True) / (z.shape[1] - 1)
    normalised = (z - mean) / torch.sqrt(var + 1e-5)
    if what == "style":
        mean = alpha * mean + (1 - alpha) * mean[perm]
        var = alpha * var + (1 - alpha) * var[perm]
    else:
        normalised = normalised[perm].detach()
    return normalised * torch.sqrt(var + 1e-5) + mean


def record_draws(model) -> list:
    draws = []
    original = model.method.draw

    def draw(*args):
        draws.append(original(*args))
        return draws[-1]

    model.method.draw = draw
    return draws


def test_two_batches_equal_domainbeds_sagnet_update() -> None:
    model = tiny_model("sagnet", {"sag_w_adv": W_ADV}, optimizer=adam)
    reference = copy.deepcopy(model)
    draws = record_draws(model)
    states = [copy.deepcopy(model.state_dict())]
    batches = synthetic_batches(2, per_domain=6)
    losses = fit(model, batches, callbacks=[KeepStates(states)])
    assert model.trainer.global_step == 2 and len(draws) == 6  # three randomisations a batch

    # DomainBed's SagNet.update with its three Adams (f, c, s), on the copy
    reference.train()
    f, c, s = reference.backbone, reference.head, reference.method.style_head
    optimizer_f, optimizer_c, optimizer_s = (
        adam(f.parameters()),
        adam(c.parameters()),
        adam(s.parameters()),
    )
    recorded = iter(draws)
    expected = []
    for step, (x, y, d) in enumerate(batches):
        reference.load_state_dict(states[step])  # in place: the Adams keep their tensors
        optimizer_f.zero_grad()
        optimizer_c.zero_grad()
        loss_c = F.cross_entropy(c(randomize_by_hand(f(x), "style", *next(recorded)), d), y)
        loss_c.backward()
        optimizer_f.step()
        optimizer_c.step()
        optimizer_s.zero_grad()
        loss_s = F.cross_entropy(s(randomize_by_hand(f(x), "content", *next(recorded))), y)
        loss_s.backward()
        optimizer_s.step()
        optimizer_f.zero_grad()
        style_logits = s(randomize_by_hand(f(x), "content", *next(recorded)))
        loss_adv = W_ADV * -F.log_softmax(style_logits, dim=1).mean(1).mean()
        loss_adv.backward()
        optimizer_f.step()
        expected.append(loss_c.item())
        for key, value in reference.state_dict().items():
            torch.testing.assert_close(states[step + 1][key], value, rtol=1e-4, atol=1e-6)
    assert losses == pytest.approx(expected, rel=1e-5)


def test_each_step_moves_only_its_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("sagnet")
    parts = {"f": model.backbone, "c": model.head, "s": model.method.style_head}
    moved = []
    step = sagnet_module.optimizer_step

    def spy(host, optimizer, counted):
        before = {k: [p.detach().clone() for p in m.parameters()] for k, m in parts.items()}
        step(host, optimizer, counted=counted)
        moved.append(
            "".join(
                k
                for k, m in parts.items()
                if any(
                    not torch.equal(b, p) for b, p in zip(before[k], m.parameters(), strict=True)
                )
            )
            + ("+" if counted else "")
        )

    monkeypatch.setattr(sagnet_module, "optimizer_step", spy)
    fit(model, synthetic_batches(2))
    # content (f and c), style (s), adversarial (f only; the batch's counted step)
    assert moved == ["fc", "s", "f+"] * 2
    assert model.trainer.global_step == 2


def test_the_randomisations_follow_their_formulas_and_gradients() -> None:
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(5, 7, generator=generator, requires_grad=True)
    alpha, perm = torch.rand(5, 1, generator=generator), torch.tensor([3, 0, 4, 1, 2])
    for what in ("style", "content"):
        torch.testing.assert_close(
            randomize(z, what, alpha, perm), randomize_by_hand(z, what, alpha, perm)
        )
    # content randomisation: a sample's output depends on its partner only through the
    # detached normalised vector, so no gradient reaches the partner
    randomize(z, "content", alpha, perm)[0].sum().backward()
    assert z.grad[3].abs().sum() == 0 and z.grad[0].abs().sum() > 0
    # style randomisation at alpha = 1 is the identity
    torch.testing.assert_close(randomize(z, "style", torch.ones(5, 1), perm), z)


def test_uncounted_steps_unscale_float16_gradients_as_counted_ones_do() -> None:
    """With fp16 AMP's gradient scaler (65536 at first), SGD steps taken on scaled gradients
    would be that much larger: the weights after two batches stay near float32's."""
    sgd = lambda params: torch.optim.SGD(params, lr=0.01)  # noqa: E731
    plain = tiny_model("sagnet", optimizer=sgd)
    fit(plain, synthetic_batches(2))
    scaled = tiny_model("sagnet", optimizer=sgd)
    scaler = torch.amp.GradScaler("cpu")
    fit(scaled, synthetic_batches(2), plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    assert scaled.trainer.global_step == 2
    for a, b in zip(plain.parameters(), scaled.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0.02)


def test_prediction_is_the_content_head_on_plain_features() -> None:
    model = tiny_model("sagnet")
    model.eval()
    images, _, domains = synthetic_batches(1)[0]
    with torch.no_grad():
        torch.testing.assert_close(
            model(images, domains), model.head(model.backbone(images), domains)
        )


def test_the_style_head_and_its_optimizer_survive_kill_and_resume(tmp_path) -> None:
    whole, resumed = resumed_losses(tmp_path, "sagnet")
    assert resumed == pytest.approx(whole, rel=1e-5, abs=1e-6)


def test_a_tiny_sagnet_fit_learns() -> None:
    losses, accuracy, _ = tiny_fit("sagnet", epochs=3)
    assert sum(losses[-8:]) < 0.5 * sum(losses[:8])
    assert accuracy > 0.6  # chance: 1/3
