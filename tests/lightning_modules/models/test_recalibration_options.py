"""The modules' options (`recalibration_kwargs`): the ablation variants of the SRM, SE and GE
papers, each with its parameter count and its gate's formula checked on random input, the
fidelity fixes (GE-theta's gather initialisation, GE-theta-plus's ReLU) and the option check."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F

from experiments.officehome import main as officehome_main
from lightning_modules.models.backbones import create_backbone
from lightning_modules.models.recalibration import (
    RECALIBRATION_MODULES,
    SqueezeExcite,
    StyleRecalibration,
    create_recalibration,
    format_module_options,
)
from lightning_modules.models.recalibration.srm_fused import FusedStyleRecalibration

C = 64


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def batch_norm_by_hand(z: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Training-mode batch norm over dimension 0 (biased batch variance, eps 1e-5)."""
    mean, variance = z.mean(0), ((z - z.mean(0)) ** 2).mean(0)
    return (z - mean) / torch.sqrt(variance + 1e-5) * gamma + beta


def randomize(module: nn.Module) -> None:
    torch.manual_seed(5)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("bn.weight"):
                parameter.uniform_(0.5, 1.5)
            else:
                parameter.normal_(0, 0.3)


def statistics_by_hand(x: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
    """(B, C, k) mean / unbiased std (eps 1e-5) / max over the positions, with explicit sums."""
    positions = x.flatten(2)
    mean = positions.sum(-1) / positions.shape[-1]
    std = torch.sqrt(
        ((positions - mean[..., None]) ** 2).sum(-1) / (positions.shape[-1] - 1) + 1e-5
    )
    by_name = {"mean": mean, "std": std, "max": positions.max(-1).values}
    return torch.stack([by_name[n] for n in names], -1)


SRM_POOLINGS = {
    "avg": ("mean",),
    "std": ("std",),
    "avg+std": ("mean", "std"),
    "max": ("max",),
    "avg+max": ("mean", "max"),
}


@pytest.mark.parametrize(("pooling", "statistics"), SRM_POOLINGS.items())
def test_srm_style_pooling_variants_count_and_formula(pooling: str, statistics: tuple) -> None:
    srm = StyleRecalibration(C, pooling=pooling).train()
    assert count(srm) == len(statistics) * C + 2 * C
    assert srm.cfc.weight.shape == (C, len(statistics)) and not srm.cfc.weight.any()
    assert srm.fusable == (pooling == "avg+std")
    randomize(srm)
    x = torch.randn(6, C, 5, 7) * 2 + 0.3
    z = (statistics_by_hand(x, statistics) * srm.cfc.weight).sum(-1)
    gate = torch.sigmoid(batch_norm_by_hand(z, srm.bn.weight, srm.bn.bias))
    torch.testing.assert_close(srm(x), x * gate[:, :, None, None])


@pytest.mark.parametrize("pooling", ["avg+std", "avg", "avg+max"])
def test_srm_mlp_integration_count_and_formula(pooling: str) -> None:
    srm = StyleRecalibration(C, pooling=pooling, integration="mlp").train()
    k, hidden = len(SRM_POOLINGS[pooling]), C // 16
    assert count(srm) == k * C * hidden + hidden + hidden * C + C + 2 * C
    assert not srm.fusable and not hasattr(srm, "cfc")
    # The recipe's exemption covers the batch norm; the MLP is decayed, as SE's is.
    assert srm.no_weight_decay() == {"bn.weight", "bn.bias"}
    randomize(srm)
    x = torch.randn(6, C, 4, 4)
    style = statistics_by_hand(x, SRM_POOLINGS[pooling]).flatten(1)
    fc1, fc2 = srm.mlp.fc1, srm.mlp.fc2
    hidden_units = torch.relu(style @ fc1.weight.flatten(1).T + fc1.bias)
    z = hidden_units @ fc2.weight.flatten(1).T + fc2.bias
    gate = torch.sigmoid(batch_norm_by_hand(z, srm.bn.weight, srm.bn.bias))
    torch.testing.assert_close(srm(x), x * gate[:, :, None, None])


def test_srm_variants_take_the_reference_path_and_the_default_stays_fused(monkeypatch) -> None:
    calls = []
    original = FusedStyleRecalibration.apply
    monkeypatch.setattr(
        FusedStyleRecalibration, "apply", lambda *a: calls.append(1) or original(*a)
    )
    x = torch.randn(4, 8, 5, 5)
    StyleRecalibration(8, pooling="avg").train()(x)
    StyleRecalibration(8, integration="mlp").train()(x)
    assert calls == []
    StyleRecalibration(8, gate_init=0.1).train()(x)  # gate_init keeps the fused kernels
    assert calls == [1]
    # The hook for the blocks equals the two calls for a variant too.
    variant, bn = StyleRecalibration(8, pooling="avg+max").train(), nn.BatchNorm2d(8)
    randomize(variant)
    reference = StyleRecalibration(8, pooling="avg+max").train()
    reference.load_state_dict(variant.state_dict())
    torch.testing.assert_close(
        variant.forward_after_batch_norm(x, bn), reference(nn.BatchNorm2d(8)(x))
    )


def test_srm_gate_init_sets_the_gate_batch_norm_gamma_fused_and_reference_agree() -> None:
    torch.manual_seed(0)
    fused = StyleRecalibration(8, gate_init=0.1).train()
    assert torch.equal(fused.bn.weight, torch.full((8,), 0.1))
    assert torch.equal(StyleRecalibration(8).bn.weight, torch.ones(8))  # the paper's 1
    with torch.no_grad():
        fused.cfc.weight.normal_()
    reference = StyleRecalibration(8, gate_init=0.1, fused=False).train()
    reference.load_state_dict(fused.state_dict())
    x = torch.randn(4, 8, 6, 6)
    z = (statistics_by_hand(x, ("mean", "std")) * fused.cfc.weight).sum(-1)
    expected = (
        x * torch.sigmoid(batch_norm_by_hand(z, fused.bn.weight, fused.bn.bias))[..., None, None]
    )
    torch.testing.assert_close(fused(x), expected)
    torch.testing.assert_close(reference(x), expected)


@pytest.mark.parametrize("reduction", [2, 4, 8, 16, 32])
def test_se_reduction_ratio_parameter_count(reduction: int) -> None:
    hidden = C // reduction
    assert count(SqueezeExcite(C, reduction=reduction)) == 2 * C * hidden + hidden + C


@pytest.mark.parametrize("squeeze", ["avg", "max"])
@pytest.mark.parametrize("excitation", ["sigmoid", "relu", "tanh"])
def test_se_squeeze_and_excitation_variants_formula(squeeze: str, excitation: str) -> None:
    se = SqueezeExcite(C, reduction=8, squeeze=squeeze, excitation=excitation)
    assert count(se) == 2 * C * 8 + 8 + C  # the operators add no parameters
    randomize(se)
    x = torch.randn(3, C, 5, 6)
    positions = x.flatten(2)
    squeezed = positions.mean(-1) if squeeze == "avg" else positions.max(-1).values
    fc1, fc2 = se.mlp.fc1, se.mlp.fc2
    z = torch.relu(squeezed @ fc1.weight.flatten(1).T + fc1.bias) @ fc2.weight.flatten(1).T
    z = z + fc2.bias
    gate = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh}[excitation](z)
    torch.testing.assert_close(se(x), x * gate[:, :, None, None])
    # The documented ranges: relu amplifies some responses, tanh flips some signs.
    if excitation == "relu":
        assert (gate >= 0).all() and (gate > 1).any()
    if excitation == "tanh":
        assert (gate < 0).any() and (gate.abs() < 1).all()


def test_se_gate_init_scales_the_last_layer_only() -> None:
    torch.manual_seed(0)
    default = SqueezeExcite(C)
    torch.manual_seed(0)
    scaled = SqueezeExcite(C, gate_init=0.1)
    torch.testing.assert_close(scaled.mlp.fc2.weight, 0.1 * default.mlp.fc2.weight)
    torch.testing.assert_close(scaled.mlp.fc2.bias, 0.1 * default.mlp.fc2.bias)
    torch.testing.assert_close(scaled.mlp.fc1.weight, default.mlp.fc1.weight)


@pytest.mark.parametrize("extent", [2, 4, 8])
@pytest.mark.parametrize(("definition", "bias"), [("ge", 0), ("srm", 1)])
def test_gather_excite_extent_parameter_counts(extent: int, definition: str, bias: int) -> None:
    convs = int(math.log2(extent))
    # Per stride-2 depthwise 3x3: 9C weights (+ C bias, SRM authors) + 2C batch norm.
    per_conv = (11 + bias) * C
    theta = create_recalibration("ge", C, extent=extent, definition=definition)
    assert count(theta) == convs * per_conv
    mlp = 2 * C * 4 + 4 + C
    plus = create_recalibration("ge_plus", C, extent=extent, definition=definition)
    assert count(plus) == convs * per_conv + mlp
    assert count(create_recalibration("ge_minus", C, extent=extent)) == 0


@pytest.mark.parametrize(("definition", "bias"), [("ge", 0), ("srm", 1)])
def test_gather_excite_global_extent_parameter_count(definition: str, bias: int) -> None:
    module = create_recalibration("ge", C, extent=0, feature_size=(7, 7), definition=definition)
    assert count(module) == C * 49 + bias * C + 2 * C


@pytest.mark.parametrize("scales", [(1,), (1, 2), (1, 2, 4), (2, 4, 8)])
def test_mssar_scales_parameter_count(scales: tuple[int, ...]) -> None:
    module = create_recalibration("mssar", C, scales=list(scales))
    assert module.scales == scales
    assert count(module) == 9 * C * len(scales) + 2 * C


def test_gather_convolutions_start_as_in_the_official_srm_code() -> None:
    """`definition: srm`: normal(0, sqrt(2 / (k^2 C))), about 1.6e-3 in layer1 and 4.5e-3 in
    layer4 at 224 px, with a bias."""
    torch.manual_seed(0)
    options = {"definition": "srm"}
    backbone = create_backbone("resnet50", "ge", image_size=224, recalibration_kwargs=options)
    layer1 = backbone.layer1[0].recalibration.gather.conv.weight
    layer4 = backbone.layer4[0].recalibration.gather.conv.weight
    assert layer1.shape == (256, 1, 56, 56) and layer4.shape == (2048, 1, 7, 7)
    assert layer1.std().item() == pytest.approx(math.sqrt(2 / (56 * 56 * 256)), rel=0.02)
    assert layer4.std().item() == pytest.approx(math.sqrt(2 / (7 * 7 * 2048)), rel=0.02)
    assert layer1.mean().abs().item() < 1e-4
    assert backbone.layer1[0].recalibration.gather.conv.bias is not None
    limited = create_recalibration("ge", 512, extent=4, definition="srm").gather
    for conv in (limited.conv1, limited.conv2):
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 512)), rel=0.05)


def test_gather_convolutions_start_as_in_the_ge_authors_prototxts() -> None:
    """The default: MSRA fan-in, normal(0, sqrt(2 / k^2)) for a depthwise k x k kernel (the
    same for every channel count), and no bias."""
    torch.manual_seed(0)
    backbone = create_backbone("resnet50", "ge", image_size=224)
    for stage, kernel in (("layer1", 56), ("layer4", 7)):
        conv = getattr(backbone, stage)[0].recalibration.gather.conv
        assert conv.bias is None
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / kernel**2), rel=0.02)
    limited = create_recalibration("ge", 512, extent=4).gather
    for conv in (limited.conv1, limited.conv2):
        assert conv.bias is None
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 9), rel=0.05)


@pytest.mark.parametrize("name", ["ge_minus", "ge", "ge_plus"])
@pytest.mark.parametrize(("extent", "size"), [(2, 56), (4, 28), (4, 14), (8, 14), (2, 7)])
def test_limited_extents_gather_the_grid_the_ge_paper_gives(
    name: str, extent: int, size: int
) -> None:
    """ceil(H / extent) positions per side, for the pooling (theta-minus) and the stride-2
    convolutions (theta, theta-plus) alike: 14x14 at extent 4 -> 4x4, at extent 8 -> 2x2."""
    module = create_recalibration(name, 4, extent=extent)
    grid = module.gathered(torch.randn(2, 4, size, size)).shape[-2:]
    assert tuple(grid) == (math.ceil(size / extent),) * 2


def test_theta_minus_pools_windows_centred_every_extent_positions() -> None:
    """Each cell is the mean of the positions within extent - 1 of its centre (0, e, 2e, ...)
    that exist, written here as explicit slices."""
    x = torch.randn(1, 3, 14, 14)
    extent = 4
    gathered = create_recalibration("ge_minus", 3, extent=extent).gathered(x)
    for row in range(4):
        for col in range(4):
            r, c = row * extent, col * extent
            window = x[..., max(r - 3, 0) : r + 4, max(c - 3, 0) : c + 4]
            torch.testing.assert_close(gathered[..., row, col], window.mean(dim=(-2, -1)))


@pytest.mark.parametrize("extent", [0, 2, 4])
def test_gather_excite_theta_and_theta_plus_formulas(extent: int) -> None:
    """Theta: sigmoid(BN(conv(x))); theta-plus: sigmoid(MLP(ReLU(BN(conv(x))))), resized."""
    x = torch.randn(4, 16, 8, 8)
    kwargs = {"extent": extent, "feature_size": (8, 8), "reduction": 4}
    for name in ("ge", "ge_plus"):
        module = create_recalibration(name, 16, **kwargs).train()
        randomize(module)
        gathered = module.gather(x)  # the convolution and batch norm layers, in order
        if name == "ge_plus":
            gathered = module.mlp(torch.relu(gathered))
        expected = F.interpolate(gathered, size=(8, 8), mode="nearest") if extent else gathered
        torch.testing.assert_close(module(x), x * torch.sigmoid(expected))
    # Without the ReLU it would differ: the gathered map has negative entries.
    without_relu = module.mlp(module.gather(x))
    if extent:
        without_relu = F.interpolate(without_relu, size=(8, 8), mode="nearest")
    assert not torch.allclose(module(x), x * torch.sigmoid(without_relu))


def test_gate_init_of_the_batch_normalised_gates() -> None:
    theta = create_recalibration("ge", 8, feature_size=(4, 4), gate_init=0.1)
    assert torch.equal(theta.gather.bn.weight, torch.full((8,), 0.1))
    limited = create_recalibration("ge", 8, extent=4, gate_init=0.1).gather
    assert torch.equal(limited.bn2.weight, torch.full((8,), 0.1))
    assert torch.equal(limited.bn1.weight, torch.ones(8))
    mssar = create_recalibration("mssar", 8, gate_init=0.1)
    assert torch.equal(mssar.bn.weight, torch.full((8,), 0.1))


@pytest.mark.parametrize("name", [n for n in RECALIBRATION_MODULES])
def test_an_unknown_option_names_the_module_and_its_valid_options(name: str) -> None:
    with pytest.raises(ValueError, match=rf"'{name}'.*no option 'fusde'.*valid options") as error:
        create_backbone("resnet20", name, image_size=16, recalibration_kwargs={"fusde": False})
    if name == "srm":
        for option in ("eps=1e-05", "fused=True", "pooling='avg+std'", "gate_init=1.0"):
            assert option in str(error.value)
    if name == "none":
        assert "valid options: none" in str(error.value)


def test_invalid_values_list_the_choices() -> None:
    with pytest.raises(ValueError, match=r"pooling='median'.*avg, std, avg\+std, max, avg\+max"):
        StyleRecalibration(8, pooling="median")
    with pytest.raises(ValueError, match=r"integration='conv'.*cfc, mlp"):
        StyleRecalibration(8, integration="conv")
    with pytest.raises(ValueError, match=r"excitation='gelu'.*sigmoid, relu, tanh"):
        SqueezeExcite(8, excitation="gelu")
    with pytest.raises(ValueError, match=r"squeeze='min'"):
        SqueezeExcite(8, squeeze="min")
    with pytest.raises(ValueError, match="gate_init=0"):
        create_recalibration("mssar", 8, gate_init=0)
    with pytest.raises(ValueError, match="reduction=0"):
        SqueezeExcite(8, reduction=0)
    # Theta-minus has no parameters: options of the learned forms are not its options.
    with pytest.raises(ValueError, match=r"'ge_minus'.*no option 'gate_init'"):
        create_recalibration("ge_minus", 8, gate_init=0.5)


def test_module_options_string_is_sorted_and_leaves_out_defaults() -> None:
    assert format_module_options("srm", None) == ""
    assert format_module_options("srm", {"pooling": "avg+std", "fused": False}) == ""
    assert format_module_options("srm", {"pooling": "avg", "gate_init": 0.1}) == (
        "gate_init=0.1,pooling=avg"
    )
    assert format_module_options("se", {"reduction": 16}) == ""
    assert format_module_options("se", {"reduction": 8}) == "reduction=8"
    assert format_module_options("mssar", {"scales": [1, 2, 4]}) == ""
    assert format_module_options("mssar", {"scales": [1, 2]}) == "scales=[1,2]"
    assert format_module_options("ge", {"extent": 0}) == ""
    assert format_module_options("ge", {"definition": "ge"}) == ""
    assert format_module_options("ge", {"definition": "srm"}) == "definition=srm"
    with pytest.raises(ValueError, match="no option 'extnt'"):
        format_module_options("ge", {"extnt": 8})


def test_the_readme_examples_work_as_written() -> None:
    """`StyleRecalibration(fused=False)` / `{fused: false}`, and the GE error's `{'extent': 8}`."""
    assert StyleRecalibration(8, fused=False).fused is False
    backbone = create_backbone(
        "resnet20", "srm", image_size=16, recalibration_kwargs={"fused": False}
    )
    assert all(m.fused is False for m in backbone.recalibration_modules().values())
    # Built for 32 px, run at 40 px: the limited extent the error recommends accepts any size.
    ge = create_backbone("resnet20", "ge", image_size=32, recalibration_kwargs={"extent": 8})
    assert ge(torch.randn(2, 3, 40, 40)).shape == (2, 64)


def test_the_config_key_is_accepted_by_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    """`recalibration_kwargs: {fused: false}` (once rejected as an unknown option) parses."""
    demo = Path(__file__).resolve().parents[3] / "configs" / "officehome" / "demo.yaml"
    args = ["fit", "--config", str(demo), "--model.init_args.recalibration_kwargs={fused: false}"]
    with pytest.raises(SystemExit) as exit_info:
        officehome_main([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    model = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    assert model["recalibration_kwargs"] == {"fused": False}


@pytest.mark.parametrize(
    ("recalibration", "options", "expected"),
    [
        ("ge", {"definition": "srm"}, 31_121_704),  # GE-theta-ResNet-50 as published (31.12M)
        ("ge", {}, 31_106_600),  # the GE authors' gather has no bias: 31.11M
        ("ge", {"extent": 8, "definition": "srm"}, 26_100_776),
        ("ge", {"extent": 8}, 26_055_464),
        ("ge_plus", {"definition": "srm"}, 33_652_696),
        ("ge_plus", {}, 33_637_592),
        ("se", {"reduction": 2}, 45_699_240),
        ("se", {"reduction": 4}, 35_635_688),
        ("se", {"reduction": 8}, 30_603_912),
        ("se", {"reduction": 32}, 26_830_080),
        ("srm", {"pooling": "avg"}, 25_602_344),  # 25,557,032 + 3C per block
        ("srm", {"integration": "mlp"}, 29_375_704),
        ("mssar", {}, 25_995_048),
    ],
)
def test_resnet50_variant_parameter_counts(
    recalibration: str, options: dict, expected: int
) -> None:
    """With a 1000-class classifier, at 224 px; the defaults' counts are in test_backbones."""
    backbone = create_backbone(
        "resnet50", recalibration, image_size=224, recalibration_kwargs=options or None
    )
    assert count(backbone) + 2048 * 1000 + 1000 == expected
