"""Every recalibration module under bfloat16 autocast on the CPU, against float32/float64.

Tolerances come from bfloat16's unit roundoff u = 2^-8 (8 significand bits): every value autocast
hands to a convolution or linear layer is rounded by up to u relative to itself.

- A module alone (`test_module_under_bf16_autocast_matches_float64`) gets a bfloat16 map, as it
  does inside an autocast network, and is compared with its float64 twin on the same values: its
  output, input gradient and parameter gradients are a few roundings away, each at most u, so the
  relative (L2) error must stay under 4u = 1.6e-2 (measured: 1e-3 to 7e-3).
- A whole backbone (`test_backbone_under_bf16_autocast_tracks_float32`) rounds at every layer,
  and how far that moves the result depends on how sensitive the network is (at initialisation,
  with batch statistics over 4 samples, a relative 2^-8 perturbation of the input alone moves
  the parameter gradients by 15-60% in float32). So the yardstick is that sensitivity, measured
  in float32 for each backbone: the autocast error must stay under 4x the error of perturbing the
  float32 input by u (measured: 0.9x to 2.2x).

SRM's fused kernels, which must keep their statistics in float32, are also checked directly: the
style statistics and the gate parameters' gradients of a bfloat16 map agree with float64 to
float32 precision, and the fused path agrees with the reference formula under autocast.
"""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path

import pytest
import torch

from lightning_modules.models.backbones import create_backbone
from lightning_modules.models.recalibration import (
    RECALIBRATION_MODULES,
    create_recalibration,
    srm_fused,
)
from lightning_modules.models.recalibration.srm import style_pooling

UNIT_ROUNDOFF = 2.0**-8
MODULES = list(RECALIBRATION_MODULES)
# (module, options): SRM on both of its paths.
VARIANTS = [(name, {}) for name in MODULES] + [("srm", {"fused": False})]
FEATURE_SIZE = (8, 8)
# CUDA cases run with `pytest -m gpu` on a machine with a GPU and are skipped elsewhere.
CUDA_MARKS = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = pytest.param("cuda", marks=CUDA_MARKS)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| (L2 over all elements), in float64."""
    actual, expected = actual.detach().double(), expected.detach().double()
    return float((actual - expected).norm() / expected.norm())


def build_module(name: str, options: dict, channels: int = 32) -> torch.nn.Module:
    """The module with its parameters moved off their initial values (zero CFC weights etc.)."""
    torch.manual_seed(0)
    module_class = RECALIBRATION_MODULES[name]
    extra = {"feature_size": FEATURE_SIZE} if module_class.uses_feature_size else {}
    module = create_recalibration(name, channels, **options, **extra).train()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return module


def styled_maps(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Random maps whose mean and spread differ between samples and channels, as features do.

    Maps that all share one mean and spread would give SRM's gate batch norm per-sample styles
    that differ only by sampling noise, which it would then scale up to unit variance: the gate
    would hang on the last bits of the statistics and magnify any rounding, on any path.
    """
    batch, channels = shape[:2]
    scale = 0.5 + 2 * torch.rand(batch, channels, 1, 1, generator=generator)
    shift = torch.randn(batch, channels, 1, 1, generator=generator)
    return torch.randn(shape, generator=generator) * scale + shift


def forward_backward(
    module, x: torch.Tensor, grad: torch.Tensor, autocast: bool, dtype=torch.bfloat16
):
    """Output, input gradient and parameter gradients (as one vector or None) of one step."""
    x = x.clone().requires_grad_()
    module.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=dtype, enabled=autocast):
        out = module(x)
    out.backward(grad.to(out.dtype))
    grads = [p.grad.flatten() for p in module.parameters()]
    return out, x.grad, torch.cat(grads) if grads else None


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=lambda v: str(v))
def test_module_under_bf16_autocast_matches_float64(name, options) -> None:
    module = build_module(name, options)
    twin = copy.deepcopy(module).double()
    generator = torch.Generator().manual_seed(1)
    # What a module meets inside an autocast network: the convolution's bfloat16 output.
    x = styled_maps((8, 32, *FEATURE_SIZE), generator).bfloat16()
    grad = torch.randn(8, 32, *FEATURE_SIZE, generator=generator).bfloat16()
    out, grad_x, grad_parameters = forward_backward(module, x, grad, autocast=True)
    expected, expected_grad_x, expected_grad_parameters = forward_backward(
        twin, x.double(), grad.double(), autocast=False
    )
    assert grad_x.dtype == torch.bfloat16
    assert relative_error(out, expected) < 4 * UNIT_ROUNDOFF
    assert relative_error(grad_x, expected_grad_x) < 4 * UNIT_ROUNDOFF
    if grad_parameters is not None:
        assert all(p.grad.dtype == torch.float32 for p in module.parameters())
        assert relative_error(grad_parameters, expected_grad_parameters) < 4 * UNIT_ROUNDOFF


@pytest.mark.parametrize(
    ("device", "dtype"),
    [
        pytest.param("cpu", torch.bfloat16, id="cpu-bf16"),
        pytest.param("cuda", torch.bfloat16, marks=CUDA_MARKS, id="cuda-bf16"),
        pytest.param("cuda", torch.float16, marks=CUDA_MARKS, id="cuda-fp16"),
    ],
)
@pytest.mark.parametrize("name", MODULES)
def test_module_output_keeps_the_autocast_dtype(name, device, dtype) -> None:
    # A float32 output would make the shortcut addition and the next block's saved input float32:
    # twice the activation memory autocast is meant to save. Gradients come back in the map's
    # dtype and the parameters' gradients in float32 (autocast keeps float32 weights).
    module = build_module(name, {}).to(device)
    x = torch.randn(4, 32, *FEATURE_SIZE, device=device).to(dtype).requires_grad_()
    with torch.autocast(device, dtype=dtype):
        out = module(x)
    out.float().square().sum().backward()
    assert x.grad.dtype == dtype
    assert all(p.grad.dtype == torch.float32 for p in module.parameters())
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())
    assert out.dtype == dtype


@functools.cache
def backbone_run(backbone: str, image_size: int, module: str, mode: str):
    """Features, input gradient and parameter gradients of one training-mode step of a fresh
    backbone: `float32`, `perturbed` (float32, input times 1 + u * noise) or `autocast`."""
    torch.manual_seed(0)
    net = create_backbone(backbone, module, image_size=image_size).train()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, image_size, image_size, generator=generator)
    # Per-sample loss weights: with one weight vector for all samples the gradient would be the
    # same for every sample, and the batch norms' backward would cancel most of it.
    weights = torch.randn(4, net.feature_dim, generator=generator)
    if mode == "perturbed":
        x = x * (1 + UNIT_ROUNDOFF * torch.randn(x.shape, generator=generator))
    x.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast"):
        features = net(x)
    (features.float() * weights).sum().backward()
    parameters = torch.cat([p.grad.flatten() for p in net.parameters()])
    return features.detach(), x.grad, parameters


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize(("backbone", "image_size"), [("resnet20", 32), ("densenet_bc_100", 16)])
def test_backbone_under_bf16_autocast_tracks_float32(backbone, image_size, name) -> None:
    reference = backbone_run(backbone, image_size, name, "float32")
    perturbed = backbone_run(backbone, image_size, name, "perturbed")
    mixed = backbone_run(backbone, image_size, name, "autocast")
    assert mixed[0].dtype == torch.bfloat16
    for quantity, actual, nudged, expected in zip(
        ("features", "input gradient", "parameter gradients"),
        mixed,
        perturbed,
        reference,
        strict=True,
    ):
        error, sensitivity = relative_error(actual, expected), relative_error(nudged, expected)
        assert error < 4 * sensitivity, (quantity, error, sensitivity)


def test_srm_statistics_of_a_bf16_map_are_float32() -> None:
    # Statistics rounded to bfloat16 would be about u = 4e-3 off; float32 ones agree with float64
    # to about 1e-7 (relative).
    generator = torch.Generator().manual_seed(3)
    x = (torch.randn(4, 16, 7, 9, generator=generator) * 3 + 2).bfloat16()
    exact_variance, exact_mean = torch.var_mean(x.double(), dim=(2, 3), correction=1)
    exact_std = torch.sqrt(exact_variance + 1e-5)
    for layout in (torch.contiguous_format, torch.channels_last):
        mapped = x.contiguous(memory_format=layout)
        mean, std, _ = srm_fused._style_statistics(mapped, 1e-5)
        reference_mean, reference_std = style_pooling(mapped)
        for actual in (mean, reference_mean):
            assert actual.dtype == torch.float32
            torch.testing.assert_close(actual.double(), exact_mean, rtol=1e-5, atol=1e-6)
        for actual in (std, reference_std):
            assert actual.dtype == torch.float32
            torch.testing.assert_close(actual.double(), exact_std, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_srm_gate_gradients_of_a_bf16_map_are_float32_sums(channels_last) -> None:
    # The CFC and gate batch norm gradients come from per-map sums of grad * x, accumulated in
    # float32: within 1e-4 of float64 on the same bfloat16 values (rounded sums: about u).
    module = build_module("srm", {})
    twin = copy.deepcopy(module).double()
    generator = torch.Generator().manual_seed(4)
    x = styled_maps((8, 32, 6, 6), generator).bfloat16()
    grad = torch.randn(8, 32, 6, 6, generator=generator).bfloat16()
    if channels_last:
        x, grad = (t.contiguous(memory_format=torch.channels_last) for t in (x, grad))
    _, _, grad_parameters = forward_backward(module, x, grad, autocast=True)
    _, _, expected = forward_backward(twin, x.double(), grad.double(), autocast=False)
    assert relative_error(grad_parameters, expected) < 1e-4


def srm_block(fused: bool) -> torch.nn.Module:
    """The second block of ResNet-18's layer2 with SRM, its parameters randomised."""
    torch.manual_seed(0)
    backbone = create_backbone(
        "resnet18", "srm", image_size=64, recalibration_kwargs={"fused": fused}
    )
    block = backbone.layer2[1]
    with torch.no_grad():
        for module in block.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
        block.recalibration.cfc.weight.normal_()
    return block


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, relative: float) -> None:
    """`actual` within `relative` x the largest magnitude of `expected`, everywhere."""
    error = (actual.double() - expected.double()).abs().max()
    assert error <= relative * expected.double().abs().max(), (float(error), relative)


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("level", ["module", "block"])
def test_fused_srm_matches_reference_under_autocast(level, channels_last, dtype, device) -> None:
    # Both under autocast (float16: what GPUs use with 16-mixed), each against the float64 truth:
    # the fused kernels must land as close to it as the reference formula does. Block level: the
    # fused batch norm + SRM kernel (reduced-precision map, float32 batch norm) against
    # nn.BatchNorm2d followed by the formula, inside a whole block.
    unit_roundoff = torch.finfo(dtype).eps / 2
    if level == "module":
        fused = build_module("srm", {})
        reference = copy.deepcopy(fused)
        reference.fused = False
        shape = (6, 32, 5, 7)
    else:
        fused, reference = srm_block(True), srm_block(False)
        shape = (6, fused.conv1.in_channels, 5, 7)
    fused, reference = fused.to(device), reference.to(device)
    truth = copy.deepcopy(reference).double()
    generator = torch.Generator().manual_seed(5)
    x = styled_maps(shape, generator).to(device)
    grad = torch.randn(shape, generator=generator).to(device)
    if level == "module":
        x = x.to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for _ in range(2):  # the running statistics keep matching
        results = forward_backward(fused, x, grad, autocast=True, dtype=dtype)
        expected = forward_backward(reference, x, grad, autocast=True, dtype=dtype)
        exact = forward_backward(truth, x.double(), grad.double(), autocast=False)
        assert results[0].dtype == expected[0].dtype == dtype
        for actual, wanted, true in zip(results, expected, exact, strict=True):
            assert actual.dtype == wanted.dtype
            error, reference_error = relative_error(actual, true), relative_error(wanted, true)
            assert error <= 1.5 * reference_error + unit_roundoff, (error, reference_error)
        # Running statistics: float32 on both paths, from statistics that differ by roundings.
        for key, wanted in reference.state_dict().items():
            actual = fused.state_dict()[key]
            assert actual.dtype == wanted.dtype
            assert_close_to_scale(actual, wanted, 4 * unit_roundoff)


def test_fused_batch_norm_path_is_taken_under_autocast(monkeypatch) -> None:
    # A bfloat16 map with a float32 batch norm (what autocast gives) takes the fused kernel, which
    # keeps only the block's input for the backward (not the batch norm's output as well).
    block = srm_block(True)
    x = torch.randn(2, block.bn2.num_features, 4, 4)
    assert srm_fused.can_fuse_batch_norm(block.bn2, x.bfloat16())
    assert srm_fused.can_fuse_batch_norm(block.bn2, x)
    # float64 parameters with a bfloat16 map: not what autocast makes, not fused.
    assert not srm_fused.can_fuse_batch_norm(copy.deepcopy(block.bn2).double(), x.bfloat16())
    calls = []
    original = srm_fused.FusedBatchNormStyleRecalibration.apply
    monkeypatch.setattr(
        srm_fused.FusedBatchNormStyleRecalibration,
        "apply",
        lambda *args: calls.append(args[0].dtype) or original(*args),
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        block(torch.randn(2, block.conv1.in_channels, 4, 4))
    assert calls == [torch.bfloat16]


REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated demo set for every fit below."""
    return tmp_path_factory.mktemp("demo-cache")


@pytest.mark.slow
@pytest.mark.parametrize("name", MODULES)
def test_bf16_mixed_fit_learns(name, demo_cache, tmp_path, monkeypatch) -> None:
    # `--trainer.precision bf16-mixed` through the CLI on the CPU, the tiny demo (4 classes,
    # 32 px, 3 epochs): training must run with float32 weights and learn, i.e. the training
    # loss falls by a tenth from the first epoch to the last (chance: ln 4 = 1.39).
    from mlflow import MlflowClient

    from experiments.officehome import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # MLflow's ./mlruns (artifacts) goes there
    epochs = "3"
    cli = main(
        [
            "fit",
            *("--config", str(REPO / "configs/officehome/demo.yaml")),
            *("--config", str(REPO / "tests/configs/officehome_tiny.yaml")),
            *("--data.init_args.cache_dir", str(demo_cache)),
            *("--trainer.max_epochs", epochs),
            *("--trainer.default_root_dir", str(tmp_path / "outputs")),
            *("--trainer.precision", "bf16-mixed"),
            *("--model.init_args.recalibration", name),
        ]
    )
    assert cli.trainer.precision == "bf16-mixed"
    assert all(p.dtype == torch.float32 for p in cli.model.parameters())
    client = MlflowClient(uri)
    losses = [
        m.value for m in client.get_metric_history(cli.trainer.logger.run_id, "train/loss_epoch")
    ]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses), losses
    assert losses[-1] < 0.9 * losses[0], losses
