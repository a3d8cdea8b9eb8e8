"""`model.init_args.compile: true` for every recalibration module and every training method:
the compiled model computes what the eager one does, and compiles only while warming up.

- Modules, with the inductor (the backend `compile: true` uses): one residual block of a CIFAR
  ResNet-20 holding the module, compiled and eager twins, forward and backward on the same map.
  The inductor fuses and reorders float32 reductions, so results differ by roundings: the
  relative (L2) error of the output, the input gradient and the parameter gradients must stay
  under 1e-4 (float32's unit roundoff is 6e-8; a wrong kernel is off by far more than that).
  Whole backbones are left to the methods below: an inductor compile of ResNet-20's forward and
  backward takes about 90 s on a 2-core CPU, one block about 13 s.
- Methods, through `MultiDomainClassifier(compile=True)` with torch.compile's `aot_eager`
  backend (Dynamo's graph capture and AOT autograd's joint forward/backward graph, as the
  inductor sees them, run by eager kernels: the capture is what a method can break, and it costs
  seconds rather than minutes): three training steps of the whole model with SRM, compiled and
  eager (SGD), must give the same losses and weights within a relative 1e-4 (measured: about 1e-7).
- No recompilation after warm-up: from the third step on, `torch.compiler.set_stance(
  "fail_on_recompile")` turns any recompilation into an error.
"""

from __future__ import annotations

import copy
import functools
import math

import pytest
import pytorch_lightning as pl
import torch

from lightning_modules.models.backbones import create_backbone
from lightning_modules.models.recalibration import RECALIBRATION_MODULES
from tests.helpers.method_fits import (
    METHODS,
    batches,
    fit,
    relative_error,
    tiny_model,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:You are trying to `self.log()`", "ignore:You defined a `validation_step`"
)

TOLERANCE = 1e-4
#: The first update (SGD: lr x gradient) within a relative 1e-3 (measured: up to about 1e-4,
#: the float32 roundings of SRM's two paths, fused kernel eager and formula compiled, grown by the
#: network's sensitivity at initialisation); MLDG's within 1e-2 (measured 1.9e-3): its update
#: adds gradients taken at meta-updated weights, where those roundings have grown once more.
UPDATE_TOLERANCE = {"default": 1e-3, "mldg": 1e-2}
#: Steps compiling may take: DANN-DG alternates network and discriminator steps (its
#: discriminator step runs the backbone without gradients, a graph of its own).
WARMUP = 2
#: Options of the methods whose defaults need more than the tiny batches have: MLDG splits the
#: batch's domains into meta-train and meta-test (2 + 2 by default; the batches hold two), and
#: the style layers act with probability 1, as their compiled graph must not depend on the coin
#: (each layer compiles once per outcome; at p=1 warm-up covers all there is).
METHOD_KWARGS = {
    "mldg": {"n_meta_test": 1},
    **{m: {"p": 1.0} for m in ("mixstyle", "dsu", "efdmix")},
}


def sgd(params) -> torch.optim.Optimizer:
    # Not Adam: its first steps are about lr * sign(gradient), so a gradient element near zero
    # moves its weight by a whole step on a rounding; SGD moves weights in proportion.
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


@pytest.fixture(autouse=True)
def _fresh_compiler():
    """Each test compiles from scratch: Dynamo's caches are per code object, and compiled models
    of earlier tests would count towards its recompile limit (past which it silently runs eager)."""
    torch.compiler.reset()
    yield
    torch.compiler.set_stance("default")
    torch.compiler.reset()


class FailOnRecompileAfterWarmup(pl.Callback):
    """After `WARMUP` training batches, any recompilation raises."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == WARMUP:
            torch.compiler.set_stance("fail_on_recompile")

    def on_train_end(self, trainer, pl_module) -> None:
        torch.compiler.set_stance("default")


def test_fail_on_recompile_catches_a_recompilation() -> None:
    # The guard the tests below rely on: a new input shape after warm-up raises.
    layer = torch.nn.Linear(4, 2)
    layer.compile(backend="aot_eager", dynamic=False)
    layer(torch.randn(3, 4))
    with torch.compiler.set_stance("fail_on_recompile"), pytest.raises(RuntimeError):
        layer(torch.randn(5, 4))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RECALIBRATION_MODULES))
def test_inductor_block_matches_eager(name) -> None:
    torch.manual_seed(0)
    backbone = create_backbone("resnet20", name, image_size=16).train()
    eager = backbone.layer2[1]
    with torch.no_grad():  # move the parameters off their initial values (zero CFC weights etc.)
        for parameter in eager.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    compiled = copy.deepcopy(eager)
    compiled.compile()
    generator = torch.Generator().manual_seed(1)
    shape = (4, eager.conv1.in_channels, 8, 8)
    for step in range(3):
        x = torch.randn(shape, generator=generator)
        grad = torch.randn(shape, generator=generator)
        results = []
        for block in (eager, compiled):
            block.zero_grad(set_to_none=True)
            inputs = x.clone().requires_grad_()
            stance = "fail_on_recompile" if step and block is compiled else "default"
            with torch.compiler.set_stance(stance):
                out = block(inputs)
            out.backward(grad)
            parameters = torch.cat([p.grad.flatten() for p in block.parameters()])
            results.append((out, inputs.grad, parameters))
        for quantity, actual, expected in zip(
            ("output", "input gradient", "parameter gradients"), *results[::-1], strict=True
        ):
            error = relative_error(actual, expected)
            assert error < TOLERANCE, (quantity, step, error)
    # Running statistics are updated by the compiled block as by the eager one.
    for key, value in eager.state_dict().items():
        if value.is_floating_point():
            assert relative_error(compiled.state_dict()[key], value) < TOLERANCE, key


class KeepFirstUpdate(pl.Callback):
    """Keep the weights before and after the first optimizer step."""

    def __init__(self) -> None:
        self.states: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.states.append(copy.deepcopy(pl_module.state_dict()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.states.append(copy.deepcopy(pl_module.state_dict()))


def first_update(callback: KeepFirstUpdate) -> torch.Tensor:
    """The first step's change of every floating-point weight, as one vector (with SGD's first
    step, learning rate x gradient)."""
    before, after = callback.states
    return torch.cat(
        [
            (after[key] - before[key]).flatten()
            for key in before
            if before[key].is_floating_point() and "running" not in key
        ]
    )


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_compiled_model_trains_as_eager(method, monkeypatch) -> None:
    data = batches(method, steps=WARMUP + 2)
    options = dict(optimizer=sgd, method_kwargs=METHOD_KWARGS.get(method))
    eager, eager_step = tiny_model(method, **options), KeepFirstUpdate()
    eager_losses = fit(eager, data, callbacks=[eager_step])
    # `compile: true` as the CLI sets it, with aot_eager in place of the inductor (see above).
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    compiled, compiled_step = tiny_model(method, compile=True, **options), KeepFirstUpdate()
    assert getattr(compiled.backbone, "_compiled_call_impl", None) is not None
    compiled_losses = fit(compiled, data, callbacks=[compiled_step, FailOnRecompileAfterWarmup()])
    assert len(compiled_losses) == len(eager_losses) == len(data)
    assert all(math.isfinite(loss) for loss in compiled_losses), compiled_losses
    # The same forward (the first loss) and backward (the first update).
    assert abs(compiled_losses[0] - eager_losses[0]) < TOLERANCE * abs(eager_losses[0])
    error = relative_error(first_update(compiled_step), first_update(eager_step))
    assert error < UPDATE_TOLERANCE.get(method, UPDATE_TOLERANCE["default"]), error
