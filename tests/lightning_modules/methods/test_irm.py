"""IRM (DomainBed's IRMv1): the loss against the paper's penalty written analytically, the
annealed weight and the optimizer reset, kill-and-resume, and a tiny fit that learns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.methods.penalties import PenaltyAnnealing, reset_optimizer_state
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


def scale_derivative(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """d/dw CE(w z, y) at w = 1, by hand: mean_i [sum_c softmax(z_i)_c z_ic - z_i,y_i]."""
    expected_logit = (logits.softmax(dim=1) * logits).sum(dim=1)
    true_logit = logits.gather(1, labels[:, None]).squeeze(1)
    return (expected_logit - true_logit).mean()


def independent_irm(model, batch, weight: float):
    """(loss, nll) of IRMv1 from the paper's definition, one pass over the batch, each
    domain's even and odd halves in the order the domain's samples appear."""
    features = model.features(batch.images)
    nll, penalty = [], []
    for rows in rows_of(batch).values():
        rows = torch.tensor(rows)
        f, y, d = features[rows], batch.labels[rows], batch.domains[rows]
        heads = [own_head_logits(model, f, d)]
        if model.head.shared is not None:
            heads.append(model.head.shared(f))
        nll.append(sum(F.cross_entropy(z, y) for z in heads))
        penalty.append(
            sum(
                scale_derivative(z[0::2], y[0::2]) * scale_derivative(z[1::2], y[1::2])
                for z in heads
            )
        )
    nll_mean = sum(nll) / len(nll)
    return nll_mean + weight * sum(penalty) / len(penalty), nll_mean


@pytest.mark.parametrize("shared_head", [False, True])
def test_irm_loss_is_mean_cross_entropy_plus_the_weighted_product_of_half_batch_gradients(
    shared_head: bool,
) -> None:
    model = tiny_model(
        "irm", {"irm_lambda": 7.0, "irm_penalty_anneal_iters": 1}, shared_head=shared_head
    )
    model.train()
    batch = separable_batch(3, sizes=(6, 4, 5))  # shuffled domains, an odd-sized one
    for weight in (1.0, 7.0):  # the first update is before the annealing ends, the second after
        output = model.method.training_loss(model, batch)
        expected, nll = independent_irm(model, batch, weight)
        torch.testing.assert_close(output.loss, expected)
        assert output.metrics["penalty_weight"] == weight
        # the penalty is differentiated through (create_graph): the network gets its gradient
        gradient = backbone_gradient(output.loss, model)
        assert_same_gradients(gradient, backbone_gradient(expected, model))
        assert not torch.allclose(gradient[0], backbone_gradient(nll, model)[0])
    assert int(model.method.annealing.update_count) == 2


def test_irm_needs_two_samples_of_every_domain() -> None:
    model = tiny_model("irm")
    with pytest.raises(ValueError, match=r"irm needs at least 2 samples.*batch_size"):
        model.method.training_loss(model, separable_batch(0, sizes=(4, 1, 4)))


class OneOptimizer:
    """What PenaltyAnnealing reads of a model: its optimizer."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def optimizers(self, use_pl_optimizer: bool = True):
        return self.optimizer


def test_annealing_weight_is_one_until_anneal_iters_and_the_optimizer_is_reset_once_then() -> None:
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([parameter], lr=0.1)
    model = OneOptimizer(optimizer)
    annealing = PenaltyAnnealing(penalty_weight=50.0, anneal_iters=3)
    weights, steps = [], []
    for _ in range(6):
        weights.append(annealing.step(model))
        parameter.grad = torch.ones(3)
        optimizer.step()  # after the method's loss, as in Lightning's closure
        steps.append(int(optimizer.state[parameter]["step"]))
    assert weights == [1.0, 1.0, 1.0, 50.0, 50.0, 50.0]
    # fresh moments at the update with count == 3: Adam counts from 1 again
    assert steps == [1, 2, 3, 1, 2, 3]
    assert int(annealing.update_count) == 6
    assert "update_count" in annealing.state_dict()


def test_off_trainer_there_is_no_optimizer_to_reset() -> None:
    assert reset_optimizer_state(tiny_model("irm")) is False


def test_a_fit_wipes_adams_moments_at_the_annealing_step(tmp_path) -> None:
    whole, resumed = assert_resume_is_seamless(
        tmp_path,
        "irm",
        {"irm_lambda": 10.0, "irm_penalty_anneal_iters": 2},
        state=lambda model: model.method.annealing.update_count,
        optimizer=adam,
        stop_after=1,  # 2 steps: the resumed run must reset at its first step
    )
    for model in (whole, resumed):
        assert int(model.method.annealing.update_count) == 6
        # 6 updates, Adam re-started at the third: it has taken 4 steps since
        states = model.trainer.optimizers[0].state.values()
        assert {int(state["step"]) for state in states} == {4}


def test_irm_learns_a_tiny_separable_task() -> None:
    assert_learns("irm", optimizer=adam)
