"""Every training method under `--trainer.precision bf16-mixed` on the CPU: a short fit learns.

Tiny separable data (the class is a bright square's corner, each domain a style; the adaptation
methods also get an unlabelled target domain), ResNet-20 at 16 px with SRM, Adam, 4 epochs of 6
batches. The fit must keep float32 weights, finite losses, lower the mean loss of its last epoch
below 0.9 x its first's, and classify held-out batches above chance (1/3) by a clear margin.
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers.method_fits import METHODS, accuracy, batches, fit, tiny_model

pytestmark = pytest.mark.filterwarnings(
    "ignore:You are trying to `self.log()`", "ignore:You defined a `validation_step`"
)

STEPS, EPOCHS = 6, 4
#: MLDG splits the batch's domains into meta-train and meta-test (2 + 2 by default; these
#: batches hold two domains).
METHOD_KWARGS = {"mldg": {"n_meta_test": 1}}


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_bf16_mixed_fit_learns(method) -> None:
    model = tiny_model(method, method_kwargs=METHOD_KWARGS.get(method))
    losses = fit(model, batches(method, STEPS), epochs=EPOCHS, precision="bf16-mixed")
    assert model.trainer.precision == "bf16-mixed"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert len(losses) == STEPS * EPOCHS and all(map(math.isfinite, losses)), losses
    first, last = sum(losses[:STEPS]) / STEPS, sum(losses[-STEPS:]) / STEPS
    assert last < 0.9 * first, (first, last)
    held_out = [b if isinstance(b, tuple) else b["source"] for b in batches(method, 3, seed=1)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert accuracy(model, held_out) > 0.5
