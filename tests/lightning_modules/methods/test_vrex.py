"""VREx (DomainBed's): the loss against the population variance of the per-domain risks written
with explicit loops, the annealing with Adam's reset in a fit, kill-and-resume, and a tiny fit
that learns."""

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


def independent_vrex(model, batch, weight: float) -> torch.Tensor:
    """mean_d L_d + weight * (1/D) sum_d (L_d - mean)^2, one pass over the batch."""
    features = model.features(batch.images)
    risks = []
    for rows in rows_of(batch).values():
        rows = torch.tensor(rows)
        f, y, d = features[rows], batch.labels[rows], batch.domains[rows]
        risk = F.cross_entropy(own_head_logits(model, f, d), y)
        if model.head.shared is not None:
            risk = risk + F.cross_entropy(model.head.shared(f), y)
        risks.append(risk)
    mean = sum(risks) / len(risks)
    variance = sum((risk - mean) ** 2 for risk in risks) / len(risks)  # population: / D
    return mean + weight * variance


@pytest.mark.parametrize("shared_head", [False, True])
def test_vrex_loss_is_mean_risk_plus_the_weighted_population_variance_of_the_risks(
    shared_head: bool,
) -> None:
    model = tiny_model(
        "vrex", {"vrex_lambda": 30.0, "vrex_penalty_anneal_iters": 1}, shared_head=shared_head
    )
    model.train()
    batch = separable_batch(4, sizes=(3, 5, 4))
    for weight in (1.0, 30.0):
        output = model.method.training_loss(model, batch)
        expected = independent_vrex(model, batch, weight)
        torch.testing.assert_close(output.loss, expected)
        assert output.metrics["penalty_weight"] == weight
        assert output.metrics["penalty"] > 0
        assert_same_gradients(
            backbone_gradient(output.loss, model), backbone_gradient(expected, model)
        )


def test_vrex_keeps_its_schedule_and_adams_reset_across_kill_and_resume(tmp_path) -> None:
    whole, resumed = assert_resume_is_seamless(
        tmp_path,
        "vrex",
        {"vrex_lambda": 100.0, "vrex_penalty_anneal_iters": 3},
        state=lambda model: model.method.annealing.update_count,
        optimizer=adam,
        stop_after=1,  # 2 steps: the jump and the reset come after the resume
    )
    for model in (whole, resumed):
        assert int(model.method.annealing.update_count) == 6
        states = model.trainer.optimizers[0].state.values()
        assert {int(state["step"]) for state in states} == {3}  # re-started at update 4


def test_vrex_learns_a_tiny_separable_task() -> None:
    assert_learns("vrex", optimizer=adam)
